"""Janus Describe Image in the (stand-in) editor: lazy load + memory manager, batches, progress, cancel, OOM, errors."""

from __future__ import annotations

import sys

import pytest
import torch


def _run(nodes, lm, image, question="What is this?", seed=0, temperature=0.0, top_p=1.0, max_new_tokens=6):
    return nodes.JanusARDescribe().describe(lm, image, question, seed, temperature, top_p, max_new_tokens,
                                            unique_id="7")


def test_batch_gives_one_answer_per_image_and_loads_once(editor, tiny_models):
    lm, _ = tiny_models
    nodes, rec = editor.nodes, editor.rec
    images = torch.rand(2, 50, 80, 3, generator=torch.Generator().manual_seed(0))
    out = _run(nodes, lm, images, temperature=0.9, seed=11)
    texts = out["result"][0]
    assert out["ui"]["text"] == texts and len(texts) == 2
    und = nodes.models.understanding_of(lm)
    assert nodes.models.understanding_of(lm) is und  # loaded once per JANUS_LM
    assert nodes.models.patcher_of(und) is not None  # registered with the memory manager
    loads = [c for c in rec.calls if c[0] == "load_models_gpu"]
    assert any(nodes.models.patcher_of(lm) in c[1] and nodes.models.patcher_of(und) in c[1] for c in loads)
    alone = _run(nodes, lm, images[1:], temperature=0.9, seed=12)["result"][0]
    assert alone == texts[1:]  # image i of a batch = seed + i alone
    steps = [p[0] for p in rec.progress]
    assert steps[:3] == [1, 2, 3] and all(p[1] == 6 for p in rec.progress)


def test_cancel_and_out_of_memory(editor, tiny_models, monkeypatch):
    lm, _ = tiny_models
    nodes, rec, mm = editor.nodes, editor.rec, sys.modules["comfy.model_management"]
    image = torch.rand(1, 32, 32, 3)
    rec.interrupt_at = 3  # the progress hook raises the editor's interrupt at token 3
    with pytest.raises(mm.InterruptProcessingException):
        _run(nodes, lm, image, max_new_tokens=40)
    assert max(p[0] for p in rec.progress) <= 3
    rec.interrupt_at = None
    rec.interrupt = False
    sys.modules["comfy.utils"].PROGRESS_BAR_HOOK = None  # only the should_cancel poll is left
    rec.interrupt = True
    with pytest.raises(mm.InterruptProcessingException, match="cancelled after 1 of 40"):
        _run(nodes, lm, image, max_new_tokens=40)
    rec.interrupt = False
    assert _run(nodes, lm, image)["result"][0]  # usable afterwards

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(nodes.describe, "describe", oom)
    rec.calls.clear()
    with pytest.raises(torch.OutOfMemoryError, match="describing .*Describe fewer images at once.*bfloat16"):
        _run(nodes, lm, image)
    assert ("soft_empty_cache", True) in rec.calls


@pytest.mark.parametrize("change,name,match", [
    (dict(question="  "), "question", "is empty"),
    (dict(image=torch.full((1, 8, 8, 3), float("nan"))), "image", "NaN"),
    (dict(image=torch.rand(1, 8, 8, 2)), "image", "has shape"),
    (dict(question="word " * 120), "question", "leaves no room for an answer"),
    (dict(top_p=0.0), "top_p", "top_p must be in"),
])
def test_errors_name_node_and_input(editor, tiny_models, change, name, match):
    lm, _ = tiny_models
    args = dict(image=torch.rand(1, 8, 8, 3), question="What?", max_new_tokens=2)
    args.update(change)
    with pytest.raises(editor.pack.janus_core.PayloadError, match=rf"Janus Describe Image, input '{name}': .*{match}"):
        _run(editor.nodes, lm, **args)


def test_status_line_like_the_samplers_and_a_capped_answer_is_said(editor, tiny_models):
    """The web status message per token (tokens, tok/s, ETA, images), then one terminal state; a max_new_tokens past
    the context is capped, the status carries the note and the node's ui shows it under the answers."""
    lm, _ = tiny_models
    rec = editor.rec
    rec.messages.clear()
    out = _run(editor.nodes, lm, torch.rand(2, 16, 16, 3), question="cat?", max_new_tokens=5000)
    status = [m for e, m in rec.messages if e == "janus.sampler.status"]
    running = [m for m in status if m["state"] == "running"]
    assert running and status[-1]["state"] == "success" and [m["state"] for m in status].count("success") == 1
    assert all(m["node"] == "7" and m["batch"] == 2 and m["total"] == 307 for m in running)
    steps = [m["step"] for m in running]
    assert steps == sorted(steps) and 1 <= steps[0] and steps[-1] <= 307
    note = "answers capped at 307 tokens: the question and image take 717 of the model's 1024 context positions"
    assert all(m["note"].startswith(note) for m in running)
    assert len(out["ui"]["text"]) == 2 and out["ui"]["janus_notes"][0].startswith(note)
    rec.messages.clear()
    quiet = _run(editor.nodes, lm, torch.rand(1, 16, 16, 3), max_new_tokens=3)
    assert "janus_notes" not in quiet["ui"]
    assert all("note" not in m for e, m in rec.messages if e == "janus.sampler.status")
