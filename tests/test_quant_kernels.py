"""torch's int8 / int4 CPU kernels on every linear shape of the released models, at every instruction-set level
this machine can force, each level and mode in its own process: a native crash fails one test and names the shape
(tests/quant_kernel_check.py prints each case before running it)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from janus_core import quantize as q

WORKER = Path(__file__).with_name("quant_kernel_check.py")
LEVELS = ("DEFAULT", "AVX2", "AVX512")  # what ATEN_CPU_CAPABILITY can force on x86 (an unknown value means "the best")
NATIVE = torch.backends.cpu.get_cpu_capability()
FORCEABLE = LEVELS[: LEVELS.index(NATIVE) + 1] if NATIVE in LEVELS else (NATIVE,)

sys.path.insert(0, str(WORKER.parent))
from quant_kernel_check import distinct_shapes  # noqa: E402


def run_level(level: str, mode: str) -> tuple[int, list[str]]:
    env = dict(os.environ, ATEN_CPU_CAPABILITY=level.lower(), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, str(WORKER), mode], env=env, capture_output=True, text=True, timeout=600)
    return p.returncode, p.stdout.splitlines() + p.stderr.splitlines()[-5:]


@pytest.mark.parametrize("mode", ["int8", "int4"])
@pytest.mark.parametrize("level", LEVELS)
def test_quantized_products_are_correct_on_every_released_shape(level, mode):
    if level not in FORCEABLE:
        pytest.skip(f"this CPU runs at most {NATIVE}; {level} cannot be forced here")
    rc, lines = run_level(level, mode)
    assert f"CAPABILITY {level}" in lines, lines[:3]  # the override took effect
    started = [line[len("START "):] for line in lines if line.startswith("START ")]
    if "DONE" not in lines:
        pytest.fail(f"{level}: the process died (exit {rc}) during {started[-1] if started else 'set-up'}: "
                    + " | ".join(lines[-5:]))
    bad = [line for line in lines if line.startswith("BAD ")]
    assert not bad, f"{level}: {bad}"
    assert len([line for line in lines if line.startswith("OK ")]) == 4 * len(distinct_shapes())
    storage = dict(line.split()[1:] for line in lines if line.startswith("STORAGE "))
    for out_f, in_f in distinct_shapes():
        assert storage[f"{out_f}x{in_f}"] == q.storage_for(mode, out_f, in_f)


def test_the_storage_rule():
    # the released models: every layer quantizable but the generation aligner's first (8 inputs: kept float)
    for out_f, in_f in distinct_shapes():
        expect = "none" if in_f == 8 else "int8" if in_f % 32 or out_f % 64 else "int4"
        assert q.storage_for("int4", out_f, in_f) == expect
        assert q.storage_for("int8", out_f, in_f) == ("none" if in_f == 8 else "int8")
    # widths the CPU int8 kernel gets wrong on AVX2 (not a multiple of 8) or AVX-512 (of 16) stay float
    for in_f in (8, 24, 40, 100, 136):
        assert q.storage_for("int8", 64, in_f) == "none"
    assert q.storage_for("int4", 96, 160) == "int8"  # out not a multiple of 64: no int4 layout
    assert q.storage_for("none", 64, 64) == "none"
