"""Our implementation against transformers' Janus on the same tiny random weights (fp32).

Tolerances: hidden states and generation-head logits atol 1e-4 / rtol 1e-4 (values are O(1));
VQ-decoded pixels atol 1e-4; greedy CFG token streams must be identical.
"""

import pytest
import torch

from janus_core import decode_tokens, load, load_generator, prepare_cond, sample_tokens
from janus_core.model import rope_tables

LAYOUTS = [("transformers", "safetensors", 1), ("original", "bin", 1)]


def _prompt_hidden(lm, ids):
    model = lm.model
    t = ids.shape[1]
    cos, sin = (x[None, None] for x in rope_tables(model.cfg, torch.arange(t), torch.float32))
    from janus_core.model import KVCache

    cache = KVCache(model.cfg, ids.shape[0], t, "cpu", torch.float32)
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    return model.forward_hidden(model.embed_tokens(ids), cos, sin, cache, 0, mask)


@pytest.mark.parametrize("layout,fmt,shards", LAYOUTS)
@torch.inference_mode()
def test_hidden_states_and_head_logits_match(hf_model, make_checkpoint, layout, fmt, shards):
    lm = load_generator(make_checkpoint(layout, fmt, shards), dtype="float32", device="cpu")
    cond = prepare_cond(lm, "a watercolor painting of mountains")
    ids = torch.tensor([cond.cond_ids, cond.uncond_ids])
    ours = _prompt_hidden(lm, ids)
    theirs = hf_model.model.language_model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(lm.model.image_logits(ours[:, -1]), hf_model.model.generation_head(theirs[:, -1]),
                               atol=1e-4, rtol=1e-4)
    img_ids = torch.tensor([5, 16000, 77])
    torch.testing.assert_close(lm.model.image_token_embeds(img_ids),
                               hf_model.prepare_embeddings_for_image_generation(img_ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout,fmt,shards", LAYOUTS)
@torch.inference_mode()
def test_vq_decode_matches(hf_model, make_checkpoint, layout, fmt, shards):
    _, vq = load(make_checkpoint(layout, fmt, shards), dtype="float32", device="cpu")
    tokens = torch.randint(0, 16384, (2, 24, 24), generator=torch.Generator().manual_seed(0))
    ours = decode_tokens(vq, tokens)
    theirs = hf_model.decode_image_tokens(tokens.view(2, -1))  # [B, 384, 384, 3] in ~[-1, 1]
    torch.testing.assert_close(ours, ((theirs + 1) / 2).clamp(0, 1), atol=1e-4, rtol=0)


@pytest.mark.parametrize("layout,fmt,shards", LAYOUTS)
@pytest.mark.parametrize("cfg_weight", [5.0, 2.5])
def test_greedy_cfg_stream_equals_transformers_generate(hf_model, make_checkpoint, layout, fmt, shards, cfg_weight):
    lm = load_generator(make_checkpoint(layout, fmt, shards), dtype="float32", device="cpu")
    cond = prepare_cond(lm, "portrait of an old man with a hat")
    ours = sample_tokens(lm, cond, seed=0, cfg=cfg_weight, temperature=0).tokens.view(1, -1)
    ids = torch.tensor([cond.cond_ids])
    theirs = hf_model.generate(ids, attention_mask=torch.ones_like(ids), generation_mode="image",
                               do_sample=False, guidance_scale=cfg_weight)
    assert torch.equal(ours, theirs.cpu())
