"""Helpers shared by the benchmarks: repo path, memory probes, markdown/JSON output."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
MIB = 1 << 20


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_bytes() -> int | None:
    kb = _status_kb("VmRSS")
    return None if kb is None else kb * 1024


def reset_peak_rss() -> str:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS. Returns the method used."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return "VmHWM after /proc/self/clear_refs=5"
    except OSError:
        return "ru_maxrss (process lifetime peak; clear_refs not permitted)"


def peak_rss_bytes() -> int | None:
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb * 1024


def machine_info(torch) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_default_threads": torch.get_num_threads(),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["isa"] = cpu_instruction_sets()
    info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    info.update(git_info())
    return info


_ISA_FLAGS = (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_vnni", "AVX512-VNNI"),
              ("avx512_bf16", "AVX512-BF16"), ("amx_tile", "AMX"), ("amx_bf16", "AMX-BF16"))


def cpu_instruction_sets() -> list[str]:
    """The vector / matrix instruction sets this CPU reports (those that decide torch's CPU kernels)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [name for flag, name in _ISA_FLAGS if flag in flags]
    except OSError:
        pass
    return []


def machine_line(info: dict) -> str:
    """'CPU: <model>, <n> cores (AVX2, AVX-512, ...; torch dispatches AVX512), torch <v>' for every table."""
    isa = ", ".join(info.get("isa") or []) or "instruction sets unknown"
    line = (f"CPU: {info.get('cpu', 'unknown')}, {info.get('cpu_count')} cores ({isa}; torch kernels at "
            f"{info.get('torch_cpu_capability', '?')}), torch {info.get('torch')}")
    if info.get("gpu"):
        line += f", GPU: {info['gpu']}"
    return line


def git_info() -> dict:
    """The commit benchmarked and whether janus_core differs from it in the working tree."""
    import subprocess

    def git(*a):
        return subprocess.run(["git", "-C", str(ROOT), *a], check=False, capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "--short", "HEAD").stdout.strip()
        dirty = git("diff", "--quiet", "HEAD", "--", "janus_core").returncode != 0
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_head": head, "janus_core_dirty": dirty}


def md_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_outputs(json_path: Path, payload: dict, markdown: str, quiet: bool = False) -> None:
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    json_path.with_suffix(".md").write_text(markdown + "\n")
    if not quiet:
        print(f"\nwrote {json_path} and {json_path.with_suffix('.md')}")
