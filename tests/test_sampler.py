"""Seeds, reference parity, CFG rows of different lengths, filters, init tokens, progress and cancel."""

import pytest
import torch

from janus_core import GenerationCancelled, PayloadError, prepare_cond, sample_tokens
from janus_core import model as model_module
from janus_core.sampling import probabilities, top_k_filter, top_p_filter
from tests.reference_loop import reference_tokens, reference_tokens_separate_rows

# The streams are causal, so equal prefixes prove the property; the full 576 steps of the (slow) reference
# loop would only add CI time. The transformers-generate oracle (test_oracle.py) covers all 576 tokens.
REF_STEPS = 160


@pytest.fixture(scope="module")
def cond(lm):
    return prepare_cond(lm, "a photo of a cat sitting on a red chair")


def test_reference_parity_seeded_multinomial(lm, cond, hf_model):
    """Batch of one, temperature 1, no filters == the official loop under torch.manual_seed(s) on CPU fp32."""
    for seed in (0, 1234):
        ours = sample_tokens(lm, cond, seed=seed).tokens.view(1, -1)[:, :REF_STEPS]
        torch.manual_seed(seed)
        ref = reference_tokens(hf_model, list(cond.cond_ids), lm.tokenizer.pad_id, cfg_weight=5.0, steps=REF_STEPS)
        assert torch.equal(ours, ref), f"seed {seed}: first mismatch at {int((ours != ref).nonzero()[0, 1])}"


def test_batch_image_i_equals_single_with_seed_plus_i(lm, cond):
    batch = sample_tokens(lm, cond, seed=41, batch_size=3, temperature=0.9, top_k=500)
    assert batch.seeds == [41, 42, 43]
    for i in range(3):
        single = sample_tokens(lm, cond, seed=41 + i, batch_size=1, temperature=0.9, top_k=500)
        assert torch.equal(batch.tokens[i], single.tokens[0])
    assert not torch.equal(batch.tokens[0], batch.tokens[1])


def test_seed_wraps_at_2_pow_64(lm, cond):
    top = 2**64 - 1
    t = sample_tokens(lm, cond, seed=top, batch_size=2)
    assert t.seeds == [top, 0]
    assert torch.equal(t.tokens[1], sample_tokens(lm, cond, seed=0).tokens[0])


def test_negative_prompt_rows_of_different_length(lm, hf_model):
    cond = prepare_cond(lm, "a cat", negative_prompt="blurry, low quality, ugly, deformed, watercolor painting")
    assert len(cond.uncond_ids) > len(cond.cond_ids)
    ours = sample_tokens(lm, cond, cfg=4.0, temperature=0).tokens.view(1, -1)[:, :REF_STEPS]
    ref = reference_tokens_separate_rows(hf_model, cond.cond_ids, cond.uncond_ids, 4.0, steps=REF_STEPS)
    assert torch.equal(ours, ref)
    # and the other way round (the cond row padded)
    cond2 = prepare_cond(lm, "a watercolor painting of mountains at sunset, quick brown fox", negative_prompt="ugly")
    ours2 = sample_tokens(lm, cond2, cfg=4.0, temperature=0).tokens.view(1, -1)[:, :REF_STEPS]
    ref2 = reference_tokens_separate_rows(hf_model, cond2.cond_ids, cond2.uncond_ids, 4.0, steps=REF_STEPS)
    assert torch.equal(ours2, ref2)


def test_filters():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5]])
    assert torch.isinf(top_k_filter(logits, 2)).tolist() == [[True, False, False, True]]
    assert torch.equal(top_k_filter(logits, 0), logits)
    p = torch.softmax(logits, -1)[0]  # sorted: 3.0 (0.61), 2.0 (0.22), 1.0 (0.08), 0.5 (0.05)
    kept = ~torch.isinf(top_p_filter(logits, 0.7))
    assert kept.tolist() == [[False, True, True, False]] and float(p[1]) < 0.7
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    probs = probabilities(logits, 1.0, top_k=1)
    assert probs.tolist() == [[0.0, 1.0, 0.0, 0.0]]


def test_top_k_1_is_greedy(lm, cond):
    greedy = sample_tokens(lm, cond, temperature=0)
    assert torch.equal(sample_tokens(lm, cond, seed=5, top_k=1).tokens, greedy.tokens)
    assert torch.equal(sample_tokens(lm, cond, seed=6, top_p=1e-6).tokens, greedy.tokens)


def test_init_tokens_and_keep_mask(lm, cond):
    base = sample_tokens(lm, cond, seed=7)
    init = torch.randint(0, 16384, (1, 24, 24), generator=torch.Generator().manual_seed(1))
    keep_all = sample_tokens(lm, cond, seed=7, init_tokens=init, keep_mask=torch.ones(1, 24, 24, dtype=torch.bool))
    assert torch.equal(keep_all.tokens, init)
    keep_none = sample_tokens(lm, cond, seed=7, init_tokens=init, keep_mask=torch.zeros(1, 24, 24, dtype=torch.bool))
    assert torch.equal(keep_none.tokens, base.tokens)
    keep = torch.zeros(1, 24, 24, dtype=torch.bool)
    keep[:, :12] = True  # keep the top half, regenerate the bottom
    half = sample_tokens(lm, cond, seed=7, batch_size=2, init_tokens=init, keep_mask=keep)
    assert torch.equal(half.tokens[:, :12], init[:, :12].expand(2, -1, -1))
    assert not torch.equal(half.tokens[:, 12:], init[:, 12:].expand(2, -1, -1))
    with pytest.raises(PayloadError, match="codebook"):
        sample_tokens(lm, cond, init_tokens=init + 16384, keep_mask=keep)
    with pytest.raises(PayloadError, match="both or neither"):
        sample_tokens(lm, cond, init_tokens=init)


def test_progress_reports_and_cancel_frees_cache(lm, cond, monkeypatch):
    seen = []
    sample_tokens(lm, cond, progress=lambda s, t, toks: seen.append((s, t, tuple(toks.shape))), progress_every=64)
    assert seen[0] == (64, 576, (1, 64)) and seen[-1] == (576, 576, (1, 576)) and len(seen) == 9

    caches = []
    real = model_module.KVCache

    class Recording(real):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            caches.append(self)

    monkeypatch.setattr("janus_core.sampler.KVCache", Recording)
    steps = []
    with pytest.raises(GenerationCancelled):
        sample_tokens(lm, cond, progress=lambda s, t, _: steps.append(s), should_cancel=lambda: len(steps) >= 10)
    assert steps[-1] == 10
    assert caches and caches[-1].k == [] and caches[-1].v == []  # buffers dropped before the exception left
    again = sample_tokens(lm, cond, seed=3)  # the model is still usable
    assert again.tokens.shape == (1, 24, 24)


def test_cond_from_another_tokenizer_is_refused(lm, cond):
    from dataclasses import replace

    with pytest.raises(PayloadError, match="tokenizer"):
        sample_tokens(lm, replace(cond, tokenizer_id="0" * 16, model_name="Other-Model"))
