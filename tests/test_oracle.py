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
    return model.forward_hidden(model.embed_text(ids), cos, sin, cache, 0, mask)


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


@pytest.fixture(scope="module")
def wide_pair(tmp_path_factory):
    """A 512-wide model, where the CPU decode products are large enough for either form to be chosen."""
    from tests.tiny_checkpoint import build_hf_model, write_checkpoint

    text = dict(hidden_size=512, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=8,
                num_key_value_heads=4)
    hf = build_hf_model(text=text)
    folder = write_checkpoint(hf, tmp_path_factory.mktemp("wide") / "wide")
    return hf, load_generator(folder, dtype="float32", device="cpu")


@pytest.mark.parametrize("form", ["linear", "gemv"])
@pytest.mark.parametrize("threads", [1, 2])
def test_wide_model_decode_form_matches_transformers(wide_pair, threads, form, monkeypatch):
    hf, lm = wide_pair
    monkeypatch.setenv("JANUS_LINEAR_FORM", form)  # whichever this CPU would pick, both are checked
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cond = prepare_cond(lm, "portrait of an old man with a hat")
        with torch.inference_mode():
            ids = torch.tensor([cond.cond_ids, cond.uncond_ids])
            last = hf.model.language_model(input_ids=ids).last_hidden_state[:, -1]  # 2 rows: the decode form
            torch.testing.assert_close(lm.model.image_logits(last), hf.model.generation_head(last), atol=1e-4, rtol=1e-4)
            img_ids = torch.tensor([5, 16000])
            torch.testing.assert_close(lm.model.image_token_embeds(img_ids),
                                       hf.prepare_embeddings_for_image_generation(img_ids), atol=1e-5, rtol=1e-5)
        ours = sample_tokens(lm, cond, seed=0, cfg=5.0, temperature=0, threads=threads).tokens.view(1, -1)
        assert all(m.forms.get(2) == (form == "gemv") for m in lm.model.modules() if hasattr(m, "forms"))
        ids = torch.tensor([cond.cond_ids])
        theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), generation_mode="image",
                             do_sample=False, guidance_scale=5.0)
        assert torch.equal(ours, theirs.cpu())
    finally:
        torch.set_num_threads(before)
