"""Image understanding (describe) against transformers' Janus on the same tiny weights, plus its edges.

Oracle: `JanusModel.get_image_features(...).pooler_output` (tower + aligner) within 1e-4, and
`generate(input_ids, pixel_values=..., generation_mode="text", do_sample=False)` token for token.
Preprocessing: transformers' `JanusImageProcessorPil` where its rounding agrees with the official truncation,
and the official truncation itself where they differ.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch
from PIL import Image

from janus_core import GenerationCancelled, PayloadError, describe, load_generator, load_understanding
from janus_core.errors import CheckpointError
from janus_core.loader import Checkpoint, build_understanding
from janus_core.understand import (
    DEFAULT_SYSTEM_PROMPT,
    answer_ids,
    preprocess_image,
    preprocess_images,
    understanding_for,
    understanding_prompt_ids,
)

LAYOUTS = [("transformers", "safetensors"), ("original", "bin")]
N_NEW = 12


def _pictures(seed=0):
    """Two different images of different sizes and modes (what a user connects)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(200, 300, 3, generator=g)  # wide
    b = (torch.rand(330, 170, 3, generator=g) * 255).to(torch.uint8).numpy()  # tall, uint8
    return [a, b]


def _hf_answer(hf_model, lm, pixels, prompt_ids, n):
    hf_model.config.image_token_id = lm.tokenizer.tok.token_to_id("<image_placeholder>")
    ids = torch.tensor([prompt_ids] * pixels.shape[0])
    out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), pixel_values=pixels, generation_mode="text",
                            do_sample=False, max_new_tokens=n)
    eos = lm.tokenizer.tok.token_to_id("<｜end▁of▁sentence｜>")
    rows = out[:, ids.shape[1]:].tolist()
    return [r[: r.index(eos)] if eos in r else r for r in rows]


@pytest.fixture(scope="module", params=LAYOUTS, ids=[lay for lay, _ in LAYOUTS])
def pair(request, make_checkpoint):
    layout, fmt = request.param
    folder = make_checkpoint(layout, fmt, 1)
    return load_generator(folder, dtype="float32", device="cpu"), load_understanding(folder, dtype="float32", device="cpu")


@torch.inference_mode()
def test_image_features_match_transformers(hf_model, pair):
    lm, und = pair
    pixels = preprocess_images(_pictures(), und.preprocess)
    assert pixels.shape == (2, 3, 384, 384)
    ours = und.model.image_features(pixels)
    theirs = hf_model.model.get_image_features(pixels).pooler_output
    assert ours.shape == (2, 576, lm.model.cfg.hidden_size)
    assert ours.std() > 0.1  # a real signal, not zeros
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_greedy_answers_equal_transformers_generate(hf_model, pair):
    lm, und = pair
    question = "a photo of a cat?"
    pics = _pictures()
    ours = answer_ids(lm, pics, question, max_new_tokens=N_NEW, understanding=und)
    prompt = understanding_prompt_ids(lm, question, 576)
    theirs = _hf_answer(hf_model, lm, preprocess_images(pics, und.preprocess), prompt, N_NEW)
    assert ours == theirs
    assert len(ours[0]) == N_NEW or len(ours[0]) < N_NEW  # stopped at EOS or the limit
    alone = [answer_ids(lm, [p], question, max_new_tokens=N_NEW, understanding=und)[0] for p in pics]
    assert alone == ours  # batching changes nothing


def test_describe_decodes_the_whole_answer(loaded, understanding):
    lm, _ = loaded
    pics = _pictures()
    ids = answer_ids(lm, pics, "describe", max_new_tokens=8, understanding=understanding)
    texts = describe(lm, pics, "describe", max_new_tokens=8)  # lazy path: the same parts, loaded once
    assert texts == [lm.tokenizer.tok.decode(r, skip_special_tokens=True) for r in ids]
    assert understanding_for(lm) is understanding


def test_rows_of_different_prompt_lengths_equal_each_alone(loaded, understanding):
    lm, _ = loaded
    pics = _pictures(1)
    questions = ["cat?", "the quick brown fox jumps over the lazy dog, what is in this photo of a red chair?"]
    both = answer_ids(lm, pics, questions, max_new_tokens=8, understanding=understanding)
    alone = [answer_ids(lm, [p], q, max_new_tokens=8, understanding=understanding)[0] for p, q in zip(pics, questions)]
    assert both == alone


# ---- prompt ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,user,assistant", [("pro", "<|User|>", "<|Assistant|>"), ("janus", "User", "Assistant")])
@pytest.mark.parametrize("system", [None, ""])
def test_prompt_ids_follow_the_official_format(loaded, fmt, user, assistant, system):
    lm = dataclasses.replace(loaded[0], prompt_format=fmt)
    head = (
        "You are a helpful language and vision assistant. You are able to understand the visual content that the "
        "user provides, and assist the user with a variety of tasks using natural language.\n\n"
    ) if system is None else ""
    expected_text = f"{head}{user}: <image_placeholder>\nWhat is in the picture?\n\n{assistant}:"
    tok = lm.tokenizer.tok
    ids = tok.encode(expected_text).ids  # BOS added by the tokenizer's template
    assert ids[0] == lm.tokenizer.bos_id
    img, boi, eoi = (tok.token_to_id(t) for t in ("<image_placeholder>", "<begin_of_image>", "<end_of_image>"))
    at = ids.index(img)
    expected = ids[:at] + [boi] + [img] * 576 + [eoi] + ids[at + 1:]
    assert understanding_prompt_ids(lm, "What is in the picture? \n", 576, system_prompt=system) == expected  # ends stripped
    assert DEFAULT_SYSTEM_PROMPT in head or system == ""


# ---- preprocessing --------------------------------------------------------------------------------------------

def _hf_pixels(pil):
    from transformers import JanusImageProcessorPil

    proc = JanusImageProcessorPil(image_mean=[0.5] * 3, image_std=[0.5] * 3, min_size=14)
    return torch.as_tensor(np.asarray(proc(pil.convert("RGB"), return_tensors="np")["pixel_values"][0]))


def _rand_pil(w, h, mode, seed=0):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": None}[mode]
    shape = (h, w) if channels is None else (h, w, channels)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)


@pytest.mark.parametrize("w,h,mode", [(300, 150, "RGB"), (96, 384, "RGBA"), (500, 500, "L"), (1, 1, "RGB"),
                                      (1000, 3, "RGB"), (20, 10, "P")])
def test_preprocessing_matches_transformers(understanding, w, h, mode):
    pil = _rand_pil(w, h, "RGB" if mode == "P" else mode)
    if mode == "P":
        pil = pil.convert("P")
    ours = preprocess_image(pil, understanding.preprocess)
    assert ours.shape == (3, 384, 384) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, _hf_pixels(pil), atol=1e-6, rtol=0)


def test_preprocessing_truncates_sizes_and_centres_like_the_official(understanding):
    # 10x7: 7/10*384 = 268.8 -> the official int() keeps 268 rows (transformers would round to 269)
    white = Image.new("RGB", (10, 7), (255, 255, 255))
    x = preprocess_image(white, understanding.preprocess)
    background = (127 / 255 - 0.5) / 0.5
    top = (384 - 268) // 2
    torch.testing.assert_close(x[:, :top], torch.full((3, top, 384), background))
    torch.testing.assert_close(x[:, top : top + 268], torch.ones(3, 268, 384))
    torch.testing.assert_close(x[:, top + 268 :], torch.full((3, 384 - 268 - top, 384), background))


def test_editor_tensors_equal_their_pil_image(understanding):
    pil = _rand_pil(64, 40, "RGB", seed=3)
    arr = torch.from_numpy(np.array(pil)).float() / 255
    batch = preprocess_images(arr[None], understanding.preprocess)  # IMAGE [1, H, W, 3]
    torch.testing.assert_close(batch[0], preprocess_image(pil, understanding.preprocess), atol=0, rtol=0)
    rgba = torch.cat([arr, torch.zeros(40, 64, 1)], dim=-1)  # alpha dropped, as convert("RGB") does
    torch.testing.assert_close(preprocess_images(rgba[None], understanding.preprocess), batch)


def test_preprocess_config_values_are_used(make_checkpoint, tmp_path):
    import json
    import shutil

    folder = shutil.copytree(make_checkpoint("original", "safetensors", 1), tmp_path / "c")
    cfg = json.loads((folder / "preprocessor_config.json").read_text())
    cfg.update(image_mean=[0.2, 0.4, 0.6], image_std=[0.25, 0.5, 0.75])
    (folder / "preprocessor_config.json").write_text(json.dumps(cfg))
    und = load_understanding(folder, device="cpu")
    assert und.preprocess.background == (51, 102, 153)
    x = preprocess_image(Image.new("RGB", (8, 4), (255, 0, 255)), und.preprocess)
    torch.testing.assert_close(x[:, 192, 192], torch.tensor([0.8 / 0.25, -0.4 / 0.5, 0.4 / 0.75]))
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([51 / 255, 102 / 255, 153 / 255]).sub(
        torch.tensor([0.2, 0.4, 0.6])).div(torch.tensor([0.25, 0.5, 0.75])))


# ---- sampling, progress, cancel ------------------------------------------------------------------------------

def test_seeds_reproduce_and_separate(loaded, understanding):
    lm, _ = loaded
    pics = _pictures(2)
    kw = dict(temperature=1.5, top_p=0.95, max_new_tokens=10, understanding=understanding)
    first = answer_ids(lm, pics, "cat?", seed=7, **kw)
    assert first == answer_ids(lm, pics, "cat?", seed=7, **kw)
    assert answer_ids(lm, [pics[1]], "cat?", seed=8, **kw)[0] == first[1]  # image i of a batch = seed + i alone
    assert answer_ids(lm, pics, "cat?", seed=8, **kw) != first
    greedy = answer_ids(lm, pics, "cat?", max_new_tokens=10, understanding=understanding)
    assert greedy == answer_ids(lm, pics, "cat?", seed=123, max_new_tokens=10, understanding=understanding)


def test_progress_per_token_and_cancel_frees_the_cache(loaded, understanding, monkeypatch):
    import janus_core.understand as und_mod

    caches = []
    real = und_mod.KVCache

    def spy(*a, **k):
        caches.append(real(*a, **k))
        return caches[-1]

    monkeypatch.setattr(und_mod, "KVCache", spy)
    lm, _ = loaded
    steps = []
    answer_ids(lm, _pictures()[:1], "cat?", max_new_tokens=6, understanding=understanding, temperature=1.0,
               progress=lambda s, t, toks: steps.append((s, t, toks.shape[1])))
    assert steps[0] == (1, 6, 1) and [s for s, _, _ in steps] == list(range(1, len(steps) + 1))
    assert len(caches) == 1 and not caches[0].k  # allocated once, released at the end
    with pytest.raises(GenerationCancelled, match="after 3 of 50"):
        answer_ids(lm, _pictures()[:1], "cat?", max_new_tokens=50, understanding=understanding, temperature=1.0,
                   should_cancel=lambda: len(steps) >= 3, progress=lambda s, t, toks: steps.__setitem__(slice(None), [0] * s))
    assert len(caches) == 2 and not caches[1].k and not caches[1].v
    assert answer_ids(lm, _pictures()[:1], "cat?", max_new_tokens=2, understanding=understanding)  # still usable


def test_the_default_answer_length_is_capped_to_what_the_context_holds(loaded, understanding):
    """max_new_tokens is a ceiling: 512 (the default) after a 717-position prompt + image would pass the tiny
    model's 1024 positions, so the answers are capped at 307 tokens and the caller is told; the capped run is the
    run with max_new_tokens=307."""
    import warnings

    from janus_core import JanusWarning
    from janus_core.understand import understanding_prompt_ids

    lm, _ = loaded
    prompt_len = len(understanding_prompt_ids(lm, "cat?", understanding.model.cfg.num_positions))
    room = lm.model.cfg.max_position_embeddings - prompt_len
    assert prompt_len + 512 > lm.model.cfg.max_position_embeddings and room == 307
    notes, totals = [], set()
    ids = answer_ids(lm, _pictures()[:2], "cat?", understanding=understanding, temperature=1.0, seed=3,
                     notice=notes.append, progress=lambda s, t, toks: totals.add(t))
    assert notes == [f"answers capped at {room} tokens: the question and image take {prompt_len} of the model's "
                     "1024 context positions (max_new_tokens was 512)."]
    assert totals == {room} and max(len(r) for r in ids) <= room
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a ceiling that fits says nothing
        assert answer_ids(lm, _pictures()[:2], "cat?", understanding=understanding, temperature=1.0, seed=3,
                          max_new_tokens=room) == ids
    with pytest.warns(JanusWarning, match=f"answers capped at {room} tokens"):  # no notice callback: a warning
        assert answer_ids(lm, _pictures()[:2], "cat?", understanding=understanding, temperature=1.0, seed=3,
                          max_new_tokens=5000) == ids


# ---- input errors ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change,match", [
    (dict(images=None), "images: no image"),
    (dict(images=[]), "images: the batch is empty"),
    (dict(images=torch.rand(0, 8, 8, 3)), "images: the batch is empty"),
    (dict(images=[torch.full((8, 8, 3), math.nan)]), r"images\[0\] holds NaN"),
    (dict(images=[torch.rand(8, 8, 2)]), r"images\[0\] has shape \(8, 8, 2\)"),
    (dict(images=["photo.jpg"]), r"images\[0\] is a str"),
    (dict(question=""), "question is empty"),
    (dict(question="   \n"), "question is empty"),
    (dict(question=5), "question must be text"),
    (dict(question="bad \ud800 text"), "question is not valid Unicode"),
    (dict(question="two <image_placeholder> images"), "must not contain the token"),
    (dict(question=["a", "b"]), "one per image"),
    (dict(max_new_tokens=0), r"max_new_tokens must be in 1\.\.1048576, got 0"),
    (dict(max_new_tokens=2.5), "max_new_tokens must be a whole number"),
    (dict(question="word " * 120, max_new_tokens=1), r"question and image take \d+ of the model's 1024 context "
                                                    "positions, which leaves no room for an answer; use a shorter"),
    (dict(temperature=math.nan), "temperature must be a finite number"),
    (dict(temperature=-0.5), r"temperature must be in \[0, 100\]"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p must be in"),
    (dict(top_p=math.inf), "top_p must be a finite number"),
    (dict(system_prompt=3), "system_prompt must be text"),
])
def test_bad_inputs_are_named(loaded, understanding, change, match):
    args = dict(images=[torch.rand(8, 8, 3)], question="cat?", max_new_tokens=2, **{})
    args.update(change)
    images, question = args.pop("images"), args.pop("question")
    with pytest.raises(PayloadError, match=match):
        answer_ids(loaded[0], images, question, understanding=understanding, **args)


def test_unknown_vision_tensor_is_refused(make_checkpoint):
    with Checkpoint(make_checkpoint("original", "safetensors", 1)) as ckpt:
        build_understanding(ckpt, "float32", "cpu")  # the documented attn_pool.* tensors are accepted unread
        ckpt.reader.shapes["vision_model.vision_tower.blocks.0.attn.q_norm.weight"] = (64,)
        with pytest.raises(CheckpointError, match="unexpected vision tensors .*q_norm"):
            build_understanding(ckpt, "float32", "cpu")


def test_understanding_reads_only_the_tower_aligner_and_head(make_checkpoint, monkeypatch):
    from janus_core.weights import WeightReader

    read = []
    real = WeightReader.copy_into
    monkeypatch.setattr(WeightReader, "copy_into", lambda self, key, dest: read.append(key) or real(self, key, dest))
    load_understanding(make_checkpoint("original", "safetensors", 1), device="cpu")
    assert read and all(k.startswith(("vision_model.vision_tower.", "aligner.")) or k == "language_model.lm_head.weight"
                        for k in read)
    assert "language_model.lm_head.weight" in read and not [k for k in read if "attn_pool" in k]


def test_describe_runs_without_transformers_or_torchvision(tiny_ckpt):
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, torch; torch.set_num_threads(1)\n"
            "from janus_core import load_generator, describe\n"
            f"lm = load_generator({str(tiny_ckpt)!r}, dtype='float32', device='cpu')\n"
            "print(describe(lm, torch.rand(1, 20, 30, 3), 'cat?', max_new_tokens=2))\n"
            "bad = [m for m in ('transformers', 'torchvision', 'timm') if m in sys.modules]\n"
            "assert not bad, bad\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=str(tiny_ckpt.parent), env=env)
    assert proc.returncode == 0, proc.stderr


def test_a_quantized_model_describes_with_a_quantized_text_head_and_an_exact_tower(tiny_ckpt, loaded, understanding):
    """The text head is the language model's: it follows the LM's quantize choice; the tower and aligner stay exact."""
    from janus_core import describe, load_generator
    from janus_core.understand import understanding_for

    lm8 = load_generator(tiny_ckpt, dtype="float32", device="cpu", quantize="int8")
    und8 = understanding_for(lm8)
    assert und8.model.lm_head.quant == "int8"
    assert {m.quant for m in und8.model.vision.modules() if hasattr(m, "quant")} == {"none"}
    for ours, ref in zip(und8.model.vision.parameters(), understanding.model.vision.parameters()):
        assert torch.equal(ours, ref)
    image = torch.rand(1, 40, 30, 3, generator=torch.Generator().manual_seed(3))
    answer = describe(lm8, image, "What is this?", max_new_tokens=6)
    assert len(answer) == 1 and isinstance(answer[0], str)


def test_images_that_cannot_fit_are_refused_before_the_tower_runs(loaded, understanding, monkeypatch):
    import janus_core.memory as memory
    from janus_core import describe
    from janus_core.errors import InsufficientMemoryError

    monkeypatch.setattr(memory, "available_bytes", lambda device: 1 << 20)
    monkeypatch.setattr(understanding.model, "image_features", lambda *a: pytest.fail("the tower ran"))
    with pytest.raises(InsufficientMemoryError, match=r"describing needs about .* images 3 does not fit"):
        describe(loaded[0], [torch.rand(8, 8, 3)] * 3, "cat?", max_new_tokens=4, understanding=understanding)
