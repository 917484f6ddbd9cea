import torch

from janus_core import decode_tokens, prepare_cond, sample_tokens


def test_end_to_end_tiny(loaded):
    lm, vq = loaded
    tokens = sample_tokens(lm, prepare_cond(lm, "a cat"), seed=3, batch_size=2)
    assert tokens.tokens.shape == (2, 24, 24) and tokens.tokens.dtype == torch.int64
    images = decode_tokens(vq, tokens)
    assert images.shape == (2, 384, 384, 3)
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
