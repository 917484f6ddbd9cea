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
