"""janus_core's Linear: nn.Linear's weight layout, with a CPU decode product chosen by measuring on this machine
(janus_core.tuning): F.linear, or `(W @ x.T).T` where that is clearly faster here."""

import pytest
import torch
import torch.nn.functional as F

from janus_core import model, tuning
from janus_core.model import Linear


def _linear(bias: bool, d_in: int = 512, d_out: int = 640) -> Linear:
    lin = Linear(d_in, d_out, bias=bias)
    torch.nn.init.normal_(lin.weight)
    if bias:
        torch.nn.init.normal_(lin.bias)
    return lin


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("form", [False, True])
def test_both_forms_match_f_linear_for_every_row_count(bias, form):
    lin = _linear(bias)
    assert lin.weight.shape == (640, 512)  # [out, in], as checkpoints store it: the loader copies it unchanged
    for rows in (1, 2, 4, 5, 8, 32, 33, 64):
        lin.forms[rows] = form
        x = torch.randn(rows, 1, 512)
        y = lin(x)
        assert y.shape == (rows, 1, 640)
        assert y.is_contiguous()  # a transposed result would send the next product down BLAS's slow path
        torch.testing.assert_close(y, F.linear(x, lin.weight, lin.bias), rtol=1e-5, atol=1e-4)


def test_the_layer_runs_the_form_its_forms_name(monkeypatch):
    """The form decides the rounding, so which one runs is part of the contract (compiled == eager)."""
    lin = _linear(bias=False)
    calls = []
    real_linear = F.linear
    monkeypatch.setattr(model.F, "linear", lambda *a, **k: calls.append("linear") or real_linear(*a, **k))
    lin.forms.update({2: True, 4: False})
    lin(torch.randn(2, 512))
    assert calls == []
    lin(torch.randn(4, 512))
    lin(torch.randn(3, 512))  # not prepared (e.g. a prefill): F.linear
    assert calls == ["linear", "linear"]


def test_prepare_forms_measures_each_shape_once_and_keeps_only_clear_wins(monkeypatch):
    # (F.linear, gemv) seconds: a clear win, a near tie; (160, 96) is too small to be measured at all
    timings = {(640, 512): (1.0, 0.5), (640, 480): (1.0, 0.9), (160, 96): (0.1, 0.01)}
    calls = []

    def fake_time(layers, rows):
        shapes = sorted({tuple(m.weight.shape) for m in layers})
        calls.extend((shape, rows) for shape in shapes)
        return {shape: timings[shape] for shape in shapes}

    monkeypatch.setattr(tuning, "_time_passes", fake_time)
    monkeypatch.setattr(tuning, "_MEASURED", {})
    monkeypatch.delenv("JANUS_LINEAR_FORM", raising=False)
    net = torch.nn.Sequential(_linear(False), _linear(False), _linear(False, 480, 640), _linear(False, 96, 160))
    assert tuning.prepare_forms(net, 2) == {(640, 512): True, (640, 480): False, (160, 96): False}
    assert [m.forms for m in net] == [{2: True}, {2: True}, {2: False}, {2: False}]
    tuning.prepare_forms(net, 2)
    assert sorted({c for c in calls if c[0] != (160, 96)}) == [((640, 480), 2), ((640, 512), 2)]  # measured once
    assert len(calls) == 3  # one measuring pass set (over every layer, so the timings see a realistic cache)
    assert tuning.prepare_forms(net, tuning.FORM_MAX_ROWS + 1) == {(640, 512): False, (640, 480): False,
                                                                   (160, 96): False}  # a GEMM


def test_the_environment_can_force_a_form(monkeypatch):
    lin = _linear(False)
    monkeypatch.setenv("JANUS_LINEAR_FORM", "gemv")
    assert tuning.prepare_forms(lin, 2) == {(640, 512): True}
    monkeypatch.setenv("JANUS_LINEAR_FORM", "linear")
    assert tuning.prepare_forms(lin, 2) == {(640, 512): False}


def test_a_real_measurement_decides_something_and_is_recorded(monkeypatch):
    monkeypatch.delenv("JANUS_LINEAR_FORM", raising=False)
    net = torch.nn.Sequential(*[_linear(False, 1024, 1024) for _ in range(3)])
    (choice,) = tuning.prepare_forms(net, 2).values()
    assert isinstance(choice, bool) and tuning.measured_forms()[(1024, 1024, 2, torch.float32, torch.get_num_threads())] == choice
    times = tuning._time_passes(list(net), 2)[(1024, 1024)]
    assert all(t > 0 for t in times)


def test_thread_tuner_picks_the_fastest_count_and_restores(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        tuner = tuning.ThreadTuner(torch.device("cpu"))
        assert tuner.candidates == [2, 1]
        clock = iter(range(1000))
        seen = []
        # one thread takes 1 time unit per step, two threads take 5 (a busy machine)
        monkeypatch.setattr(tuning.time, "perf_counter", lambda: float(next(clock)))
        for _ in range(tuning.RETUNE_EVERY + 8):
            tuner.before()
            seen.append(torch.get_num_threads())
            cost = 5 if torch.get_num_threads() == 2 else 1
            for _ in range(cost - 1):
                next(clock)
            tuner.after()
        trial = tuning.TRIAL_STEPS
        assert seen[: 2 * trial] == [2] * trial + [1] * trial and set(seen[2 * trial : tuning.RETUNE_EVERY]) == {1}
        assert seen[tuning.RETUNE_EVERY : tuning.RETUNE_EVERY + trial] == [2] * trial  # tried again, then back to 1
        assert seen[tuning.RETUNE_EVERY + trial] == 1
        assert seen[-1] == 1
        tuner.close()
        assert torch.get_num_threads() == 2
        fixed = tuning.ThreadTuner(torch.device("cpu"), threads=1)
        fixed.before()
        assert torch.get_num_threads() == 1 and not fixed.active
        fixed.close()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_compiled_product_takes_the_eager_form():
    """The forms round differently: a compiled step must pick the same one as eager, or its tokens drift."""
    lin = _linear(bias=True)
    x = torch.randn(2, 512)
    for form in (False, True):
        torch._dynamo.reset()
        lin.forms[2] = form
        compiled = torch.compile(lin, fullgraph=True, dynamic=False)
        assert torch.equal(compiled(x), lin(x))
    torch._dynamo.reset()
