"""Bad values at node inputs: a clear error naming the node and the input, nothing run, nothing written, and the
next run works (the editor's server keeps going)."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch

SAMPLER = "Janus Token Sampler"


def _sample(nodes, lm, cond, seed=5, batch=1, cfg=5.0, temperature=1.0, top_k=0, top_p=1.0, **kw):
    return nodes.JanusARSampler().sample(lm, cond, seed, batch, cfg, temperature, top_k, top_p, unique_id="3", **kw)[0]


@pytest.fixture
def cond(editor, tiny_models):
    return editor.nodes.JanusARPrompt().encode(tiny_models[0], "a cat", "")[0]


@pytest.mark.parametrize("setting,value,message", [
    ("cfg", float("nan"), "input 'cfg': cfg must be a finite number"),
    ("cfg", float("inf"), "input 'cfg'"),
    ("temperature", float("nan"), "input 'temperature'"),
    ("temperature", 0.0, "input 'temperature': must be > 0"),
    ("top_p", 0.0, r"input 'top_p': top_p must be in \(0, 1\]"),
    ("top_p", -0.5, "input 'top_p'"),
    ("top_k", -3, "input 'top_k'"),
    ("seed", -1, "input 'seed'"),
    ("batch", 0, "input 'batch_size'"),
])
def test_sampler_settings_name_the_input_and_the_next_run_works(editor, tiny_models, cond, monkeypatch, setting,
                                                                value, message):
    lm, _ = tiny_models
    nodes = editor.nodes
    real = lm.model.forward_hidden
    monkeypatch.setattr(lm.model, "forward_hidden", lambda *a, **k: pytest.fail("sampling started"))
    with pytest.raises(editor.pack.janus_core.PayloadError, match=f"{SAMPLER}, {message}"):
        _sample(nodes, lm, cond, **{setting: value})
    monkeypatch.setattr(lm.model, "forward_hidden", real)
    if setting == "cfg" and value != value:  # once is enough for the slow part: the next prompt runs
        assert _sample(nodes, lm, cond).tokens.shape == (1, 24, 24)


def test_batch_that_cannot_fit_names_batch_size(editor, tiny_models, cond, monkeypatch):
    lm, _ = tiny_models
    monkeypatch.setattr(editor.pack.janus_core.memory, "available_bytes", lambda device: 1 << 20)
    with pytest.raises(editor.pack.janus_core.JanusError, match=f"{SAMPLER}, input 'batch_size': sampling needs about"):
        _sample(editor.nodes, lm, cond, batch=8)


def test_nan_mask_is_refused(editor, tiny_models, cond):
    lm, _ = tiny_models
    init = editor.pack.janus_core.JanusTokens(tokens=torch.zeros(1, 24, 24, dtype=torch.long))
    with pytest.raises(editor.pack.janus_core.PayloadError, match="input 'mask': holds NaN"):
        _sample(editor.nodes, lm, cond, init_tokens=init, mask=torch.full((1, 64, 64), float("nan")))


@pytest.mark.parametrize("prompt,negative,message", [
    ("a \ud800 cat", "", "Janus Prompt, input 'prompt': prompt is not valid Unicode"),
    ("a cat", "x \udfff", "Janus Prompt, input 'negative_prompt': negative_prompt is not valid Unicode"),
    ("a cat", "blur " * 30000, "input 'negative_prompt': negative_prompt too long"),
])
def test_prompt_node_names_the_input(editor, tiny_models, prompt, negative, message):
    with pytest.raises(editor.pack.janus_core.PayloadError, match=message):
        editor.nodes.JanusARPrompt().encode(tiny_models[0], prompt, negative)


@pytest.mark.parametrize("image,message", [
    (torch.zeros(1, 32, 32, 3, dtype=torch.uint8), "input 'image': images must hold floats in 0..1, got uint8"),
    (torch.full((1, 32, 32, 3), float("nan")), "input 'image': .*NaN"),
    (torch.full((1, 32, 32, 3), 255.0), "input 'image': .*divide by 255"),
    ("not an image", "input 'image': expected an IMAGE"),
])
def test_encode_node_refuses_bad_images(editor, tiny_models, image, message):
    with pytest.raises(editor.pack.janus_core.PayloadError, match=f"Janus VQ Encode, {message}"):
        editor.nodes.JanusAREncode().encode(tiny_models[1], image)


@pytest.mark.parametrize("device,message", [("cuda", "no CUDA GPU"), ("mps", "MPS is not available"),
                                            ("cuda:3", "CUDA")])
def test_loader_node_unavailable_device(editor, device, message):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(editor.pack.janus_core.JanusError,
                       match=f"Janus Model Loader, input 'device': .*{message}.*available here: auto, cpu"):
        editor.nodes.JanusARLoader().load("tiny-janus", "auto", device)


def test_load_tokens_refuses_a_malformed_file(editor):
    (editor.base / "input" / "junk.safetensors").write_bytes(os.urandom(64))
    (editor.base / "input" / "empty.safetensors").write_bytes(b"")
    for name in ("junk.safetensors", "empty.safetensors"):
        with pytest.raises(editor.pack.janus_core.PayloadError, match="Load Janus Tokens, input 'file': .*not a "
                                                                      "readable safetensors file"):
            editor.nodes.JanusARLoadTokens().load(name)


def test_save_tokens_never_overwrites_and_leaves_no_temporary(editor, monkeypatch):
    core, nodes = editor.pack.janus_core, editor.nodes
    toks = core.JanusTokens(tokens=torch.zeros(1, 24, 24, dtype=torch.long), seeds=[1])
    out = editor.base / "output" / "janus"
    out.mkdir(parents=True)
    (out / "tokens_00001_.safetensors").write_bytes(b"someone else's file")
    # a file appears under the next number between the counter scan and the write: the save takes the one after
    real_next = nodes.tokens._next_counter
    calls = {"n": 0}

    def racing_next(folder, name):
        calls["n"] += 1
        if calls["n"] == 1:
            (out / "tokens_00002_.safetensors").write_bytes(b"raced in")
            return 2
        return real_next(folder, name)
    monkeypatch.setattr(nodes.tokens, "_next_counter", racing_next)
    ui = nodes.JanusARSaveTokens().save(toks, "janus/tokens")["ui"]["janus_tokens_files"]
    assert ui[0]["filename"] == "tokens_00003_.safetensors"
    assert (out / "tokens_00001_.safetensors").read_bytes() == b"someone else's file"
    assert (out / "tokens_00002_.safetensors").read_bytes() == b"raced in"
    assert sorted(os.listdir(out)) == [f"tokens_0000{i}_.safetensors" for i in (1, 2, 3)]  # no temporary left
    assert hashlib.sha256((out / "tokens_00003_.safetensors").read_bytes()).hexdigest()


def test_describe_node_names_the_input_for_images_that_cannot_fit(editor, tiny_models, monkeypatch):
    monkeypatch.setattr(editor.pack.janus_core.memory, "available_bytes", lambda device: 1 << 20)
    image = torch.rand(2, 16, 16, 3)
    with pytest.raises(editor.pack.janus_core.JanusError, match="Janus Describe Image, input 'image': describing needs"):
        editor.nodes.JanusARDescribe().describe(tiny_models[0], image, "What is it?", 0, 0.0, 1.0, 4)


def test_a_failed_save_tokens_leaves_no_new_subfolder(editor, monkeypatch):
    core, nodes = editor.pack.janus_core, editor.nodes
    toks = core.JanusTokens(tokens=torch.zeros(1, 24, 24, dtype=torch.long), seeds=[1])

    def full(tokens, path):
        assert os.path.isdir(os.path.dirname(path))  # the subfolder is made for the write ...
        raise core.errors.OutputError(f"cannot write {path}: the disk is full (nothing was left behind).")
    monkeypatch.setattr(nodes.tokens, "save_tokens_file", full)
    with pytest.raises(core.JanusError, match="Save Janus Tokens, input 'filename_prefix': .*the disk is full"):
        nodes.JanusARSaveTokens().save(toks, "new/deeper/tokens")
    assert not (editor.base / "output" / "new").exists()  # ... and removed when it fails
    assert (editor.base / "output").is_dir()  # the editor's own folder stays
