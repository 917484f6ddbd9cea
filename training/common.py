"""What every training stage shares: checkpoints written atomically and resumed, a one-line progress bar, the
device / thread choice, and a per-step random stream (step s draws its data from seed s, so a resumed run draws
exactly what an uninterrupted one would)."""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def step_rng(seed: int, step: int) -> random.Random:
    return random.Random(seed * 1_000_003 + step)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def add_amp_argument(parser) -> None:
    parser.add_argument("--amp", choices=("auto", "on", "off"), default="auto",
                        help="bf16 autocast: 'auto' uses it where bfloat16 products are native (a GPU with bf16, a "
                             "CPU with AVX512-BF16 / AMX: janus_core.loader's dtype rule); on an AVX2-only CPU it is "
                             "emulated and about 6x slower than float32")
    parser.add_argument("--no-amp", dest="amp", action="store_const", const="off", help="same as --amp off")


def use_amp(choice: str, device: torch.device) -> bool:
    """Whether to train / encode under bf16 autocast on `device` (see add_amp_argument)."""
    if choice != "auto":
        return choice == "on"
    from janus_core.loader import auto_dtype_reason

    return auto_dtype_reason(device)[0] == torch.bfloat16


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temporary name in the same folder, then rename: a stopped run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path):
    """The last checkpoint (tensors, numbers, strings and dicts only: weights_only), or None."""
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


class Progress:
    """`stage: step/total [#####.....] loss ... (s/step, ETA)` on one stderr line, a new line every `every` steps."""

    def __init__(self, label: str, total: int, start: int = 0, every: int = 50):
        self.label, self.total, self.start, self.every = label, total, start, every
        self.t0 = time.monotonic()

    def __call__(self, step: int, **metrics) -> None:
        done = step - self.start
        rate = (time.monotonic() - self.t0) / max(done, 1)
        eta = rate * (self.total - step)
        filled = int(30 * step / max(self.total, 1))
        shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        end = "\n" if step % self.every == 0 or step == self.total else ""
        sys.stderr.write(f"\r{self.label}: {step}/{self.total} [{'#' * filled}{'.' * (30 - filled)}] {shown} "
                         f"({rate:.2f} s/step, ETA {eta / 60:.1f} min){end}")
        sys.stderr.flush()


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
