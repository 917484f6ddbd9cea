"""The thread tuner only changes speed: tokens do not depend on the thread count (or on the tuner's switches)."""

import torch

from janus_core import prepare_cond, sample_tokens


def test_tokens_do_not_depend_on_the_thread_count(lm, monkeypatch):
    from janus_core import tuning

    cond = prepare_cond(lm, "a photo of a cat")
    fixed = [sample_tokens(lm, cond, seed=3, batch_size=2, threads=t).tokens for t in (1, 2)]
    assert torch.equal(fixed[0], fixed[1])
    monkeypatch.setattr(tuning, "RETUNE_EVERY", 5)  # switch often during the run
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        tuned = sample_tokens(lm, cond, seed=3, batch_size=2).tokens
    finally:
        torch.set_num_threads(before)
    assert torch.equal(tuned, fixed[0])


def test_kept_measurements_outlive_the_process_and_survive_bad_files(tmp_path, monkeypatch):
    """Product forms measured in one process are read back by the next (no timing at all), from a file
    written atomically; a damaged file is measured over and replaced, an unwritable one only loses the file."""
    import json

    from janus_core import tuning
    from janus_core.model import Linear

    path = tmp_path / "cache" / "tuning.json"
    monkeypatch.setenv("JANUS_TUNING_CACHE", str(path))
    monkeypatch.delenv("JANUS_LINEAR_FORM", raising=False)
    monkeypatch.setattr(tuning, "_KEPT", None)
    monkeypatch.setattr(tuning, "_MEASURED", {})
    timed = []

    def fake_time(layers, rows):
        timed.append(rows)
        return {tuple(m.weight.shape): (1.0, 0.5) for m in layers}  # gemv clearly faster

    monkeypatch.setattr(tuning, "_time_passes", fake_time)
    net = torch.nn.Sequential(Linear(1024, 512, bias=False))
    assert tuning.prepare_forms(net, 2) == {(512, 1024): True} and timed == [2]
    kept = json.loads(path.read_text())["machines"][tuning.machine_key()]["form"]
    assert list(kept.values()) == [True] and not list(path.parent.glob(".*tmp"))
    monkeypatch.setattr(tuning, "_KEPT", None)  # a new process: nothing in memory, the file decides
    monkeypatch.setattr(tuning, "_MEASURED", {})
    monkeypatch.setattr(tuning, "_time_passes", lambda layers, rows: {tuple(m.weight.shape): (0.5, 1.0) for m in layers})
    assert tuning.prepare_forms(net, 2) == {(512, 1024): True}  # as kept, although this clock now says otherwise
    tuning.remember("window", {("window", "abc", torch.bfloat16, 4): 2.5})  # another kind, merged into the file
    data = json.loads(path.read_text())["machines"][tuning.machine_key()]
    assert data["window"] == {"window|abc|bfloat16|4": 2.5} and list(data["form"].values()) == [True]

    path.write_text("{damaged")
    monkeypatch.setattr(tuning, "_KEPT", None)
    monkeypatch.setattr(tuning, "_MEASURED", {})
    assert tuning.recall("window", ("window", "abc", torch.bfloat16, 4)) is None
    assert tuning.prepare_forms(net, 2) == {(512, 1024): False}  # measured again, and the file replaced
    assert list(json.loads(path.read_text())["machines"][tuning.machine_key()]["form"].values()) == [False]

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("JANUS_TUNING_CACHE", str(blocker / "tuning.json"))  # its folder cannot be made
    monkeypatch.setattr(tuning, "_KEPT", None)
    tuning.remember("window", {("k",): 3.0})
    assert tuning.recall("window", ("k",)) == 3.0  # kept for the process all the same
    monkeypatch.setenv("JANUS_TUNING_CACHE", "")
    monkeypatch.setattr(tuning, "_KEPT", None)
    assert tuning.store_path() is None and tuning.recall("window", ("k",)) is None


class _FakeMachine:
    """A decode step whose time is `cost` one-token units for a window and 1 for one position, times seeded
    lognormal jitter, with occasional 2.5x stalls (another process taking the core); tuning's clock is this
    machine's clock, so the test is exact and instant."""

    def __init__(self, cost: float, seed: int, jitter: float = 0.1, stalls: float = 0.1, unit: float = 1e-3):
        import random

        self.rng, self.cost, self.jitter, self.stalls, self.unit = random.Random(seed), cost, jitter, stalls, unit
        self.now, self.calls = 0.0, 0

    def clock(self) -> float:
        return self.now

    def forward(self, width: int) -> None:
        import math

        self.calls += 1
        factor = math.exp(self.rng.gauss(0, self.jitter)) * (2.5 if self.rng.random() < self.stalls else 1.0)
        self.now += (self.cost if width > 1 else 1.0) * factor * self.unit


def _measure(monkeypatch, machine: _FakeMachine) -> float:
    from janus_core import tuning

    monkeypatch.setattr(tuning.time, "perf_counter", machine.clock)
    return tuning.measure_window_cost(machine.forward, 16)


def test_window_cost_is_the_true_ratio_on_a_steady_machine_and_close_to_it_on_a_noisy_one(monkeypatch):
    """The cost auto keeps for good must not hang on one lucky or unlucky forward: on a machine with 10 % jitter
    and a stall in one forward of ten, every one of 100 measurements lands within 1/8 octave of the true cost
    (the rule it replaced, the fastest of three forwards of each width, did so in about half of them)."""
    import math

    from janus_core import tuning

    rounded = 2 ** (round(math.log2(3.0) * tuning.COST_STEPS) / tuning.COST_STEPS)
    assert _measure(monkeypatch, _FakeMachine(3.0, 0, jitter=0.0, stalls=0.0)) == rounded
    assert _measure(monkeypatch, _FakeMachine(0.5, 0, jitter=0.0, stalls=0.0)) == 1.0  # never below one forward
    off = [abs(math.log2(_measure(monkeypatch, _FakeMachine(3.0, seed)) / 3.0)) for seed in range(100)]
    assert max(off) <= 1 / 8, max(off)


def test_window_cost_measures_many_rounds_on_a_fast_model_and_few_on_a_slow_one(monkeypatch):
    from janus_core import tuning

    fast = _FakeMachine(3.0, 1, unit=1e-4)  # a round: 0.8 ms
    _measure(monkeypatch, fast)
    assert fast.calls == 2 + 4 * tuning.COST_ROUNDS[1]
    slow = _FakeMachine(3.0, 1, unit=1.0)  # a round: 8 s, as a large model on a CPU
    _measure(monkeypatch, slow)
    assert slow.calls == 2 + 4 * tuning.COST_ROUNDS[0]
