"""janus_core's Linear: nn.Linear's weight layout, with the `(W @ x.T).T` product for few rows by a large weight
on the CPU."""

import pytest
import torch
import torch.nn.functional as F

from janus_core import model
from janus_core.model import Linear


def _linear(bias: bool, d_in: int = 512, d_out: int = 640) -> Linear:
    lin = Linear(d_in, d_out, bias=bias)
    torch.nn.init.normal_(lin.weight)
    if bias:
        torch.nn.init.normal_(lin.bias)
    return lin


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_matches_f_linear_for_every_row_count(bias, threads):
    lin = _linear(bias)
    assert lin.weight.shape == (640, 512)  # [out, in], as checkpoints store it: the loader copies it unchanged
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for rows in (1, 2, 4, 5, 8, 32, 33, 64):
            x = torch.randn(rows, 1, 512)
            y = lin(x)
            assert y.shape == (rows, 1, 640)
            assert y.is_contiguous()  # a transposed result would send the next product down BLAS's slow path
            torch.testing.assert_close(y, F.linear(x, lin.weight, lin.bias), rtol=1e-5, atol=1e-4)
    finally:
        torch.set_num_threads(before)


def test_few_rows_take_the_gemv_form_many_rows_f_linear(monkeypatch):
    """The form decides the rounding, so which one runs is part of the contract (compiled == eager)."""
    lin = _linear(bias=False)
    calls = []
    real_linear = F.linear
    monkeypatch.setattr(model.F, "linear", lambda *a, **k: calls.append("linear") or real_linear(*a, **k))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        lin(torch.randn(4, 512))
        assert calls == []
        lin(torch.randn(5, 512))
        assert calls == ["linear"]
        torch.set_num_threads(2)
        lin(torch.randn(32, 512))
        assert calls == ["linear"]
        lin(torch.randn(33, 512))
        assert calls == ["linear", "linear"]
        small = _linear(bias=False, d_in=96, d_out=160)  # narrower than GEMV_MIN_IN: F.linear
        small(torch.randn(2, 96))
        assert calls == ["linear", "linear", "linear"]
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_compiled_product_takes_the_eager_form():
    """The forms round differently: a compiled step must pick the same one as eager, or its tokens drift."""
    lin = _linear(bias=True)
    x = torch.randn(2, 512)
    torch._dynamo.reset()
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            compiled = torch.compile(lin, fullgraph=True, dynamic=False)
            assert torch.equal(compiled(x), lin(x))
    finally:
        torch.set_num_threads(before)
        torch._dynamo.reset()
