"""Janus Token Sampler in the (stand-in) editor: progress + preview, cancel, OOM, payload errors, mask convention."""

from __future__ import annotations

import dataclasses
import sys
import time

import pytest
import torch


def _run(nodes, lm, cond, seed=5, batch=1, **kw):
    return nodes.JanusARSampler().sample(lm, cond, seed, batch, 5.0, 1.0, 0, 1.0, unique_id="3", **kw)[0]


def test_progress_preview_cancel_and_next_run(editor, tiny_models, monkeypatch):
    lm, _ = tiny_models
    nodes, rec, mm = editor.nodes, editor.rec, sys.modules["comfy.model_management"]
    cond = nodes.JanusARPrompt().encode(lm, "a cat", "")[0]
    made = []

    class Spy(nodes.sampler._Progress):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(nodes.sampler, "_Progress", Spy)
    t0 = time.perf_counter()
    first = _run(nodes, lm, cond, decoding="sequential")
    elapsed = time.perf_counter() - t0
    assert first.tokens.shape == (1, 24, 24) and first.seeds == [5]
    steps = [p[0] for p in rec.progress]
    assert steps == list(range(4, 577, 4)) and all(p[1] == 576 for p in rec.progress)
    assert first.settings["decoding"] == "sequential" and first.settings["forwards"] == 576
    previews = [p[2] for p in rec.progress if p[2] is not None]
    assert previews and previews[-1][0] == "JPEG" and previews[-1][2] == 384  # the box the editor fits (and labels) it in
    assert previews[-1][1].size == (384, 384) and previews[-1][1].mode == "RGB"
    # the preview is cheap: generous bound here (CI machines are noisy); docs/NODES.md gives measured numbers
    assert made[0].preview_seconds < 0.25 * elapsed, (made[0].preview_seconds, elapsed)
    states = [m["state"] for e, m in rec.messages if e == "janus.sampler.status"]
    assert states[0] == "running" and states[-1] == "success"

    # cancel from the editor mid-sampling: the progress hook raises the editor's interrupt
    rec.progress.clear()
    rec.messages.clear()
    rec.interrupt_at = 200
    with pytest.raises(mm.InterruptProcessingException):
        _run(nodes, lm, cond)
    assert max(p[0] for p in rec.progress) < 200 + 8  # stopped within a few tokens
    assert [m["state"] for e, m in rec.messages if e == "janus.sampler.status"][-1] == "cancelled"
    assert ("soft_empty_cache", True) in rec.calls

    # the next queue runs normally and gives the same tokens; the default (auto: jacobi on the CPU) too, in fewer
    # forwards, its progress counting final tokens
    rec.interrupt_at = None
    assert torch.equal(_run(nodes, lm, cond, decoding="sequential").tokens, first.tokens)
    rec.progress.clear()
    fast = _run(nodes, lm, cond)
    assert torch.equal(fast.tokens, first.tokens)
    assert fast.settings["decoding"] == "jacobi" and fast.settings["adaptive"] and fast.settings["forwards"] <= 576
    steps = [p[0] for p in rec.progress]
    assert steps == sorted(set(steps)) and steps[-1] == 576 and len(steps) <= 576 // 4 + 1


def test_zipar_runs_from_the_node_in_fewer_forwards(editor, tiny_models):
    lm, _ = tiny_models
    nodes = editor.nodes
    cond = nodes.JanusARPrompt().encode(lm, "a cat", "")[0]
    assert "zipar" in nodes.JanusARSampler.INPUT_TYPES()["optional"]["decoding"][0]
    zipar = _run(nodes, lm, cond, decoding="zipar")
    assert zipar.settings["decoding"] == "zipar" and zipar.settings["window"] == 8
    assert zipar.settings["forwards"] == 23 * 8 + 24
    assert torch.equal(_run(nodes, lm, cond, decoding="zipar").tokens, zipar.tokens)  # a rerun: the same image


def test_cancel_through_processing_interrupted_without_progress_hook(editor, tiny_models):
    lm, _ = tiny_models
    nodes, rec, mm = editor.nodes, editor.rec, sys.modules["comfy.model_management"]
    sys.modules["comfy.utils"].PROGRESS_BAR_HOOK = None  # only the should_cancel poll is left
    cond = nodes.JanusARPrompt().encode(lm, "a cat", "")[0]
    rec.interrupt = True
    with pytest.raises(mm.InterruptProcessingException, match="cancelled after 1 of 576"):
        _run(nodes, lm, cond)


def test_out_of_memory_names_the_remedy_and_releases(editor, tiny_models, monkeypatch):
    lm, vq = tiny_models
    nodes, rec = editor.nodes, editor.rec
    cond = nodes.JanusARPrompt().encode(lm, "a cat", "")[0]

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(nodes.sampler, "sample_tokens", oom)
    with pytest.raises(torch.OutOfMemoryError) as info:
        _run(nodes, lm, cond, batch=8)
    msg = str(info.value)
    assert "batch_size 8" in msg and "Lower batch_size" in msg and "dtype" in msg and "bfloat16" in msg
    assert ("soft_empty_cache", True) in rec.calls
    assert [m["state"] for e, m in rec.messages if e == "janus.sampler.status"][-1] == "error"
    rec.calls.clear()
    monkeypatch.setattr(nodes.vq, "decode_tokens", oom)
    tokens = editor.pack.janus_core.JanusTokens(tokens=torch.zeros(2, 24, 24, dtype=torch.long))
    with pytest.raises(torch.OutOfMemoryError, match="decoding.*Lower batch_size"):
        nodes.JanusARDecode().decode(vq, tokens)
    assert ("soft_empty_cache", True) in rec.calls


def test_cond_from_another_tokenizer_names_the_input(editor, tiny_models):
    lm, _ = tiny_models
    nodes = editor.nodes
    cond = nodes.JanusARPrompt().encode(lm, "a cat", "")[0]
    other = dataclasses.replace(cond, tokenizer_id="0123456789abcdef", model_name="Janus-Pro-7B")
    with pytest.raises(editor.pack.janus_core.PayloadError, match=r"Janus Token Sampler, input 'cond': .*Janus-Pro-7B"):
        _run(nodes, lm, other)
    with pytest.raises(editor.pack.janus_core.PayloadError, match="input 'cond'"):
        _run(nodes, lm, "not a cond")


def test_init_tokens_and_mask_errors_name_the_input(editor, tiny_models):
    lm, _ = tiny_models
    nodes, core = editor.nodes, editor.pack.janus_core
    cond = nodes.JanusARPrompt().encode(lm, "a cat", "")[0]
    good = core.JanusTokens(tokens=torch.zeros(1, 24, 24, dtype=torch.long))
    mask = torch.ones(1, 64, 64)
    with pytest.raises(core.PayloadError, match="input 'init_tokens'"):
        _run(nodes, lm, cond, mask=mask)
    with pytest.raises(core.PayloadError, match="input 'mask'"):
        _run(nodes, lm, cond, init_tokens=good)
    with pytest.raises(core.PayloadError, match="input 'init_tokens'.*shape"):
        _run(nodes, lm, cond, init_tokens=core.JanusTokens(tokens=torch.zeros(1, 16, 16, dtype=torch.long)), mask=mask)
    with pytest.raises(core.PayloadError, match="input 'init_tokens'.*codebook"):
        _run(nodes, lm, cond, init_tokens=core.JanusTokens(tokens=torch.full((1, 24, 24), 16384)), mask=mask)
    with pytest.raises(core.PayloadError, match="input 'mask'.*batch 3"):
        _run(nodes, lm, cond, batch=2, init_tokens=good, mask=torch.ones(3, 24, 24))
    with pytest.raises(core.PayloadError, match="input 'temperature'"):
        nodes.JanusARSampler().sample(lm, cond, 0, 1, 5.0, 0.0, 0, 1.0)


def test_mask_convention_white_regenerates(editor):
    to_regen = editor.nodes.sampler.mask_to_regenerate
    m = torch.zeros(1, 384, 384)
    m[:, :, 192:] = 1.0  # right half white
    r = to_regen(m)
    assert r.shape == (1, 24, 24) and r[:, :, 12:].all() and not r[:, :, :12].any()
    # any size, [H, W] too; a non-square mask is aligned with VQ Encode's centre crop
    wide = torch.zeros(100, 300)
    wide[:, 150:250] = 1.0  # right half of the centre square (100..200) is white
    r = to_regen(wide)
    assert r[0, :, 12:].all() and not r[0, :, :12].any()
    assert to_regen(torch.full((2, 8, 8), 0.5)).all()  # 0.5 regenerates; smaller than the grid is fine
    assert not to_regen(torch.full((1, 30, 30), 0.49)).any()
