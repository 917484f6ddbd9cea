"""Kernel choices made by measuring on the machine that runs, never by constants measured on another one.

CPUs disagree about the few-row products of a decode step (2 x batch rows with CFG): on an AMD EPYC (MKL's
generic path) `(W @ x.T).T` is 1.3-4.5x faster than `F.linear`, on an Intel Xeon with AVX-512 it is 2-4x
slower (benchmarks/README.md, "Decode products"). So:

- **Product form** (`prepare_forms`): before a decode loop, each distinct linear shape is timed in both forms at
  the loop's row count, on one thread (what a preempted multi-thread run degrades to, and the least noisy), a
  few interleaved repeats each. `(W @ x.T).T` is kept only where it beats `F.linear` by WIN_MARGIN: the forms
  round differently, and a clear margin keeps a noisy measurement from flipping the choice (and the image)
  between runs. Decided once per process per (shape, rows, dtype) and stored on each `Linear` (`forms`), so the
  compiled step reads the same choice as the eager one. Products of more than FORM_MAX_ROWS rows (prefill) are
  GEMMs, where BLAS is at its best: always `F.linear`. `JANUS_LINEAR_FORM=linear|gemv` overrides (debugging).
- **Thread count** (`ThreadTuner`): with other processes busy, an OpenMP product on every core can be many
  times slower than on one (each step waits for its slowest, preempted thread). The sampler times its own steps
  under each candidate thread count (all cores, half of them, one), keeps the fastest and tries the others
  again every RETUNE_EVERY steps. Thread counts do not change the results (torch's CPU products give the same
  bits on any thread count; `tests/test_tuning.py` checks the tokens), so this only changes speed.
"""

from __future__ import annotations

import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

FORM_MAX_ROWS = 64  # more rows: a GEMM, F.linear without measuring
WIN_MARGIN = 1.25  # (W @ x.T).T must be at least this much faster to be chosen
REPEATS = 5  # timed products per form (after one warm-up), interleaved
_MEASURED: dict[tuple, bool] = {}  # (out, in, rows, dtype) -> True = the (W @ x.T).T form


def gemv_product(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """One dot product per output feature: MKL splits the output features over the threads and streams the weight
    once, where its few-row GEMM path may stream it once per row. Contiguous, so the next product gets a plain
    [rows, features] input (a transposed one would send it down the slow GEMM path)."""
    return (weight @ x.t()).t().contiguous()


def _forced() -> str | None:
    value = os.environ.get("JANUS_LINEAR_FORM", "").strip().lower()
    return value if value in ("linear", "gemv") else None


def _time_forms(weight: torch.Tensor, rows: int) -> tuple[float, float]:
    """Median seconds of F.linear and of the gemv form on `weight`, one thread."""
    x = torch.randn(rows, weight.shape[1], dtype=weight.dtype)
    times = {"linear": [], "gemv": []}
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i in range(REPEATS + 1):
            for form in ("linear", "gemv"):
                t0 = time.perf_counter()
                F.linear(x, weight) if form == "linear" else gemv_product(x, weight)
                if i:
                    times[form].append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(saved)
    return statistics.median(times["linear"]), statistics.median(times["gemv"])


def choose_form(weight: torch.Tensor, rows: int) -> bool:
    """True when the (W @ x.T).T form is the one to use for `rows` rows times `weight` [out, in] on this CPU."""
    forced = _forced()
    if forced is not None:
        return forced == "gemv"
    if weight.device.type != "cpu" or rows > FORM_MAX_ROWS or not weight.dtype.is_floating_point:
        return False
    key = (*weight.shape, rows, weight.dtype)
    if key not in _MEASURED:
        linear, gemv = _time_forms(weight, rows)
        _MEASURED[key] = gemv * WIN_MARGIN < linear
    return _MEASURED[key]


def prepare_forms(model: nn.Module, rows: int) -> dict[tuple, bool]:
    """Decide the product form of every float `Linear` of `model` for `rows` rows (measuring each new shape once)
    and store it on the layer. Returns {(out, in): gemv?} for the shapes seen."""
    from .model import Linear

    seen = {}
    with torch.inference_mode():
        for m in model.modules():
            if isinstance(m, Linear) and m.quant == "none" and m.weight.device.type == "cpu":
                shape = tuple(m.weight.shape)
                if shape not in seen:
                    seen[shape] = choose_form(m.weight, rows)
                m.forms[rows] = seen[shape]
    return seen


def measured_forms() -> dict[tuple, bool]:
    """Every choice made in this process: (out, in, rows, dtype) -> gemv?"""
    return dict(_MEASURED)


# ---- threads ------------------------------------------------------------------------------------------------


RETUNE_EVERY = 64  # steps between tries of the other thread counts
TRIAL_STEPS = 2  # steps timed per candidate (the first after a switch also pays for waking the threads)


class ThreadTuner:
    """Picks the thread count of a CPU decode loop from the loop's own step times (see the module docstring).

    Call `before()` ahead of each step and `after()` once it is done; `close()` restores the caller's count.
    `threads` given (an int) fixes the count: no tuning."""

    def __init__(self, device: torch.device, threads: int | None = None):
        self.saved = torch.get_num_threads()
        self.active = device.type == "cpu" and threads is None and self.saved > 1
        if threads is not None and device.type == "cpu":
            torch.set_num_threads(threads)
        top = self.saved
        self.candidates = sorted({top, max(1, top // 2), 1}, reverse=True) if self.active else [torch.get_num_threads()]
        self.best = self.candidates[0]
        self.step = 0
        self.times: dict[int, list[float]] = {c: [] for c in self.candidates}
        self.trial: list[int] = [c for c in self.candidates for _ in range(TRIAL_STEPS)]
        self.current = None
        self.t0 = 0.0

    def before(self) -> None:
        if not self.active:
            return
        if not self.trial and self.step and self.step % RETUNE_EVERY == 0:
            self.trial = [c for c in self.candidates if c != self.best for _ in range(TRIAL_STEPS)]
            self.times[self.best] = self.times[self.best][-TRIAL_STEPS:]  # the current pick's recent steps count
        want = self.trial[0] if self.trial else self.best
        if want != self.current:
            torch.set_num_threads(want)
            self.current = want
        self.t0 = time.perf_counter()

    def after(self) -> None:
        if not self.active:
            return
        elapsed = time.perf_counter() - self.t0
        self.step += 1
        runs = self.times[self.current]
        runs.append(elapsed)
        del runs[:-TRIAL_STEPS]
        if self.trial:
            self.trial.pop(0)
            if not self.trial:  # every candidate has fresh times: keep the fastest (the last step of each counts)
                self.best = min(self.candidates, key=lambda c: self.times[c][-1] if self.times[c] else float("inf"))

    def close(self) -> None:
        torch.set_num_threads(self.saved)
