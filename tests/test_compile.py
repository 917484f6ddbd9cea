"""The optional compiled step (torch.compile; CUDA graphs on CUDA) gives the same tokens as the eager path."""

import pytest
import torch

from janus_core import prepare_cond, sample_tokens
from janus_core.sampler import drop_static_decoders


@pytest.mark.slow
def test_compiled_step_matches_eager(loaded):
    lm, _ = loaded
    torch._dynamo.reset()
    try:
        for prompt, negative in (("a cat", ""), ("a cat", "blurry, low quality, deformed")):
            cond = prepare_cond(lm, prompt, negative)
            eager = sample_tokens(lm, cond, seed=11, batch_size=2, temperature=0.8)
            compiled = sample_tokens(lm, cond, seed=11, batch_size=2, temperature=0.8, compile=True)
            assert torch.equal(eager.tokens, compiled.tokens)
        assert len(lm.static_decoders) == 1  # same rows and cache bucket: one compiled step, reused
    finally:
        drop_static_decoders(lm)
