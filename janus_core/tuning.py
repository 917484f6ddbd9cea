"""Kernel choices made by measuring on the machine that runs, never by constants measured on another one.

CPUs disagree about the few-row products of a decode step (2 x batch rows with CFG): on an AMD EPYC (MKL's
generic path) `(W @ x.T).T` is 1.3-4.5x faster than `F.linear`, on an Intel Xeon with AVX-512 it is 2-4x
slower (benchmarks/README.md, "Decode products"). So:

- **Product form** (`prepare_forms`): before a decode loop, each distinct linear shape is timed in both forms at
  the loop's row count and thread count (the gemv form's gain is in how MKL splits it over threads: on the AMD
  EPYC of benchmarks/README.md it wins 4.3x at 2 rows on two threads, 2.9x on one), within passes over all the
  model's layers in order (so each product meets the cold cache of a real decode step), a few interleaved
  repeats each. `(W @ x.T).T` is kept
  only where it beats `F.linear` by WIN_MARGIN: the forms round differently, and a clear margin keeps a noisy
  measurement from flipping the choice (and the image) between runs. Decided once per process per (shape, rows,
  dtype) and stored on each `Linear` (`forms`), so the compiled step reads the same choice as the eager one.
  Products of more than FORM_MAX_ROWS rows (prefill) are GEMMs, where BLAS is at its best, and weights of at most
  256 KiB stay in cache (the two forms are a near tie that noise would decide differently from run to run): always
  `F.linear`. `JANUS_LINEAR_FORM=linear|gemv` overrides (debugging).
- **Thread count** (`ThreadTuner`): with other processes busy, an OpenMP product on every core can be many
  times slower than on one (each step waits for its slowest, preempted thread). The sampler times its own steps
  under each candidate thread count (all cores, half of them, one), keeps the fastest and tries the others
  again every RETUNE_EVERY steps. Thread counts do not change the results (torch's CPU products give the same
  bits on any thread count; `tests/test_tuning.py` checks the tokens), so this only changes speed.
- **Jacobi window** (`WidthChooser`, decoding="auto"): a window forward costs more than a one-token forward (how
  much depends on the machine, the dtype and the model), and what it gains depends on how many drafts the model
  confirms (many on a trained model, almost none on random weights). The two forms round differently, so a
  token at a near-tie can depend on which width computed it: the width of every forward must follow from the
  tokens alone, never from a clock, or the same graph could make another image on a rerun. So the loop's
  choices are a fixed function of the tokens so far and one number, the window's cost in one-token forwards,
  measured once per machine and model (`measure_window_cost`, on forwards whose results are thrown away) and
  then kept.
- **Kept measurements** (`recall` / `remember`): the measured choices that can change output bits (the product
  forms and the window's cost) are kept per machine (CPU model, torch's kernel level, torch version, core
  count) in a small JSON file, so a graph rerun after a restart, or tomorrow, makes the same tokens as today.
  `JANUS_TUNING_CACHE` names the file (empty: keep nothing beyond the process); by default
  `$XDG_CACHE_HOME/janus_ar/tuning.json` (`~/.cache/...`). Delete it to measure again. A file that cannot be
  read or written is ignored: the measurements then last for the process.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

FORM_MAX_ROWS = 64  # more rows: a GEMM, F.linear without measuring
SMALL_WEIGHT_BYTES = 256 << 10  # a weight this small stays in cache and costs microseconds: F.linear, unmeasured
WIN_MARGIN = 1.25  # (W @ x.T).T must be at least this much faster to be chosen
REPEATS = 7  # timed passes per form (after one warm-up each), interleaved
_MEASURED: dict[tuple, bool] = {}  # (out, in, rows, dtype, threads) -> True = the (W @ x.T).T form


def gemv_product(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """One dot product per output feature: MKL splits the output features over the threads and streams the weight
    once, where its few-row GEMM path may stream it once per row. Contiguous, so the next product gets a plain
    [rows, features] input (a transposed one would send it down the slow GEMM path)."""
    return (weight @ x.t()).t().contiguous()


def _forced() -> str | None:
    value = os.environ.get("JANUS_LINEAR_FORM", "").strip().lower()
    return value if value in ("linear", "gemv") else None


def _time_passes(layers: list, rows: int) -> dict[tuple, tuple[float, float]]:
    """Seconds per shape of F.linear and of the gemv form, summed over one pass over `layers` in model order.

    A decode step streams every weight once, so each product meets a cold cache (a model's weights are larger
    than it); timing one weight again and again would keep it in cache and favour F.linear wrongly. So every
    timed pass runs all the layers, in order, each product timed where it stands. At the current thread count;
    REPEATS passes per form (3 above 4 rows, where a pass costs more and the gaps are wider; the fastest counts)
    after one warm-up pass each, forms alternating."""
    xs = {}
    for m in layers:
        key = (m.weight.shape[1], m.weight.dtype)
        if key not in xs:
            xs[key] = torch.randn(rows, key[0], dtype=key[1])
    shapes = sorted({tuple(m.weight.shape) for m in layers})
    runs = {(shape, form): [] for shape in shapes for form in ("linear", "gemv")}
    repeats = REPEATS if rows <= 4 else 3
    for i in range(repeats + 1):
        for form in ("linear", "gemv"):
            total = dict.fromkeys(shapes, 0.0)
            for m in layers:
                x = xs[(m.weight.shape[1], m.weight.dtype)]
                t0 = time.perf_counter()
                F.linear(x, m.weight) if form == "linear" else gemv_product(x, m.weight)
                total[tuple(m.weight.shape)] += time.perf_counter() - t0
            if i:
                for shape, t in total.items():
                    runs[(shape, form)].append(t)
    # the fastest pass: interference (other processes, frequency changes) only ever adds time
    return {shape: (min(runs[(shape, "linear")]), min(runs[(shape, "gemv")])) for shape in shapes}


def prepare_forms(model: nn.Module, rows: int) -> dict[tuple, bool]:
    """Decide the product form of every float CPU `Linear` of `model` for `rows` rows (measuring the shapes not
    decided yet in this process, see `_time_passes`) and store it on each layer. Returns {(out, in): gemv?}."""
    from .model import Linear

    layers = [m for m in model.modules() if isinstance(m, Linear) and m.quant == "none"
              and m.weight.device.type == "cpu" and m.weight.dtype.is_floating_point]
    forced = _forced()
    decided: dict[tuple, bool] = {}
    todo = []
    threads = torch.get_num_threads()
    for m in layers:
        key = (*m.weight.shape, rows, m.weight.dtype, threads)
        if forced is not None:
            decided[key] = forced == "gemv"
        elif rows > FORM_MAX_ROWS or m.weight.numel() * m.weight.element_size() <= SMALL_WEIGHT_BYTES:
            decided[key] = False  # nothing to stream (and a near tie a noisy timing could flip between runs)
        elif key in _MEASURED or recall("form", key) is not None:
            decided[key] = _MEASURED.setdefault(key, bool(recall("form", key)))
        else:
            todo.append(m)
    if todo:
        new = {}
        with torch.inference_mode():
            for shape, (linear, gemv) in _time_passes(layers, rows).items():
                for dtype in {m.weight.dtype for m in todo if tuple(m.weight.shape) == shape}:
                    key = (*shape, rows, dtype, threads)
                    _MEASURED[key] = decided[key] = new[key] = gemv * WIN_MARGIN < linear
        remember("form", new)
    for m in layers:
        m.forms[rows] = decided[(*m.weight.shape, rows, m.weight.dtype, threads)]
    return {tuple(m.weight.shape): m.forms[rows] for m in layers}


def measured_forms() -> dict[tuple, bool]:
    """Every choice made in this process: (out, in, rows, dtype, threads) -> gemv?"""
    return dict(_MEASURED)


# ---- measurements kept across runs ----------------------------------------------------------------------------


_KEPT: dict | None = None  # this machine's entries: {kind: {key: value}}, read from the file once


def store_path() -> Path | None:
    """The file of kept measurements (see the module docstring); None = keep nothing beyond the process."""
    value = os.environ.get("JANUS_TUNING_CACHE")
    if value is not None:
        return Path(value).expanduser() if value.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "janus_ar" / "tuning.json"


def machine_key() -> str:
    """What the measurements belong to: another CPU, kernel level, torch or core count measures afresh."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} | {torch.backends.cpu.get_cpu_capability()} | torch {torch.__version__} | {os.cpu_count()} cpus"


def _key_text(key: tuple) -> str:
    return "|".join(str(part).replace("torch.", "") for part in key)


def _read_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) and data.get("version") == 1 else {"version": 1}
    except (OSError, ValueError):
        return {"version": 1}  # missing, unreadable or damaged: measure again (and replace it)


def _kept() -> dict:
    global _KEPT
    if _KEPT is None:
        path = store_path()
        mine = _read_file(path).get("machines", {}).get(machine_key(), {}) if path else {}
        _KEPT = mine if isinstance(mine, dict) else {}
    return _KEPT


def recall(kind: str, key: tuple):
    """A measurement kept for this machine (this process or an earlier one), or None."""
    entries = _kept().get(kind)
    return entries.get(_key_text(key)) if isinstance(entries, dict) else None


def remember(kind: str, entries: dict) -> None:
    """Keep {key: value} measurements for this machine: in the process, and in the file where it can be written
    (merged with what other processes wrote there, then replaced atomically)."""
    if not entries:
        return
    texts = {_key_text(k): v for k, v in entries.items()}
    _kept().setdefault(kind, {}).update(texts)
    path = store_path()
    if path is None:
        return
    from .errors import JanusError
    from .files import write_new_file

    data = _read_file(path)
    machines = data.setdefault("machines", {})
    mine = machines.setdefault(machine_key(), {})
    mine.setdefault(kind, {}).update(texts)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_new_file(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1, sort_keys=True)), overwrite=True)
    except (OSError, JanusError):
        pass  # a read-only or full disk: the measurement lasts for this process


# ---- threads ------------------------------------------------------------------------------------------------


RETUNE_EVERY = 64  # steps between tries of the other thread counts
TRIAL_STEPS = 3  # steps timed per candidate; the fastest of them counts (the first after a switch wakes threads)
SWITCH_GAIN = 0.9  # another count must be at least 10 % faster than the current pick to replace it


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
            for c in self.candidates:  # fresh times for everyone: the incumbent's are its last steps
                if c != self.best:
                    self.times[c] = []
            self.trial = [c for c in self.candidates if c != self.best for _ in range(TRIAL_STEPS)]
        want = self.trial[0] if self.trial else self.best
        if want != torch.get_num_threads():  # (another tuner of the same loop may have changed it)
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
            if not self.trial:
                fastest = {c: min(t) for c, t in self.times.items() if t}
                challenger = min(fastest, key=fastest.get)
                if self.best not in fastest or fastest[challenger] < SWITCH_GAIN * fastest[self.best]:
                    self.best = challenger

    def close(self) -> None:
        torch.set_num_threads(self.saved)


OPENING = 24  # one-token steps that open a run: the first row (no row above to draft from) gives the hit rate
HOPELESS_HITS = 0.1  # drafts hitting less often than this (random weights hit 1 / vocabulary): no window tried
COST_STEPS = 8  # a measured window cost is rounded to 1/8 octave (a steadier number to keep)
LOSS_BUDGET = 12.0  # one-token forwards (2 % of an image) the window forwards may fall behind break-even before
# they stop, and the most credit they carry (chosen by replaying recorded demo traces with the kept cost off by
# -20..+25 %, benchmarks/auto_policy.py: the worst run stays within 2 % of sequential at the right cost, and
# bf16 batch 4, whose windows pay only after a slow start, keeps 1.20x of its 1.30x)


COST_RULE = "paired-rounds"  # how measure_window_cost measures (part of the kept cost's key)


def window_cost_key(lm, rows: int, window: int, threads: int) -> tuple:
    """What a window's cost in one-token forwards belongs to: the model, its dtype and weights, the rows of a
    forward (2 x batch), the window and the caller's thread count; and the rule that measured it (a cost kept
    by an earlier, less steady rule is measured again)."""
    return ("window", COST_RULE, lm.identity.fingerprint, lm.dtype, lm.quantize, lm.device.type, rows, window, threads)


class WidthChooser:
    """Chooses between the Jacobi window and one-token (sequential) steps for one loop.

    A window forward pays when it confirms more final tokens than `cost`, its time in one-token forwards (a
    property of the machine and model, measured once by `measure_window_cost` and kept). Every choice is a
    function of the tokens and `cost` alone (module docstring: a clock must not pick the product that computes
    a token). What a window confirms comes in bursts (several forwards refine a stretch of drafts, then it is
    confirmed at once), so it is judged over many forwards, not forward by forward:

    - A run opens with OPENING one-token steps (the sequential step exactly). They give the draft hit rate:
      how often a final token equals the draft its position was first given (the left neighbour in the first
      row), per image. Below HOPELESS_HITS (random weights) no window is tried: the run stays sequential.
    - Otherwise windows run, and the rest of the run goes to one-token steps as soon as the window forwards
      have fallen LOSS_BUDGET tokens behind break-even (`cost` tokens each): the sum over window forwards of
      `cost` minus what each confirmed, where a surplus counts up to LOSS_BUDGET. Where windows never pay, a
      run loses about that against sequential; where they pay after a slow start (the first rows, a batch
      advancing by its slowest image), the slow start is carried; a picture that stops paying later loses at
      most twice the budget from there. A picture that turns predictable later does not get the window back:
      one-token steps cannot see what refined drafts would confirm.

    `width()` says what the next forward runs; `record(width, accepted, hits)` reports it (`hits`: how many of
    the `accepted` new final tokens equal their first draft, averaged over the batch's images). `active=False`
    always answers `window`."""

    def __init__(self, window: int, active: bool = True, cost: float = 1.0):
        self.window, self.active, self.cost = window, active, cost
        self.best = 1
        self.hits = 0.0
        self.tokens = 0
        self.judged = False
        self.deficit = 0.0  # sum over window forwards of cost minus what each confirmed, at least -LOSS_BUDGET
        self.used = {window: 0, 1: 0}  # forwards per width (reported)

    def width(self) -> int:
        return self.best if self.active else self.window

    @property
    def settled(self) -> bool:
        """One-token steps for the rest of the run (the loop may hand over to the plain sequential loop)."""
        return self.active and self.judged and self.best == 1

    def record(self, width: int, accepted: int, hits: float | None = None) -> None:
        self.used[width] += 1
        self.tokens += accepted
        if not self.active:
            return
        if width == self.window:
            self.deficit = max(-LOSS_BUDGET, self.deficit + self.cost - accepted)
        elif hits is not None:
            self.hits += hits
        if self.best == 1 and not self.judged and self.tokens >= OPENING:
            self.judged = True  # the opening is over: windows, unless the drafts never hit
            if self.hits / self.tokens >= HOPELESS_HITS:
                self.best = self.window
        elif self.best == self.window and self.deficit > LOSS_BUDGET:
            self.best = 1  # for the rest of the run: one-token steps cannot see what a window would do


COST_ROUNDS = (3, 40)  # rounds of paired timings: at least, at most
COST_SECONDS = 2.0  # rounds after the fewest go on while the measurement has taken less than this


def measure_window_cost(forward: Callable[[int], object], window: int) -> float:
    """The time of a `window`-wide forward in one-token forwards: `forward(width)` runs one (on inputs whose
    results are thrown away). Rounded to 1/COST_STEPS octave, at least 1.

    Measured in rounds, after one warm-up forward of each width (caches, threads): a round times the two widths
    back to back, twice, in alternating order, and gives the ratio of its fastest window forward to its fastest
    one-token forward. Both widths of a round see the same moment of a shared machine, so a burst of other work
    slows both and barely moves their ratio, and the median of many rounds' ratios counts. (The rule this
    replaced, the fastest of three forwards of each width, paired the luckiest moment of one width with the
    luckiest of the other: on a noisy 2-core VM it read 2.2-3.4 for a cost of 2.8, and 1.4-3.4 for 1.6, and a
    low reading made auto run windows that did not pay; benchmarks/README.md, "window cost".) At least
    COST_ROUNDS[0] rounds, then more until COST_SECONDS have passed or COST_ROUNDS[1] rounds are done: a
    small model gets many rounds in a fraction of a second, a large one on a CPU its three rounds. Measured once
    per machine and model, then kept."""
    for width in (window, 1):
        forward(width)
    ratios: list[float] = []
    start = time.perf_counter()
    while len(ratios) < COST_ROUNDS[1] and (len(ratios) < COST_ROUNDS[0] or time.perf_counter() - start < COST_SECONDS):
        times: dict[int, list[float]] = {window: [], 1: []}
        for order in ((window, 1), (1, window)):
            for width in order:
                t0 = time.perf_counter()
                forward(width)
                times[width].append(time.perf_counter() - t0)
        ratios.append(min(times[window]) / max(min(times[1]), 1e-9))
    ratio = max(1.0, statistics.median(ratios))
    return 2 ** (round(math.log2(ratio) * COST_STEPS) / COST_STEPS)
