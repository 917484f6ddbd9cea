"""Token tools: save / load (.safetensors in the editor folders only), token map, tokens info, VQ payload checks."""

from __future__ import annotations

import json
import os

import pytest
import torch


def _tokens(core, batch=2, fill=None):
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 16384, (batch, 24, 24), generator=g) if fill is None else torch.full((batch, 24, 24), fill)
    return core.JanusTokens(tokens=t, seeds=[7 + i for i in range(batch)],
                            settings={"cfg": 5.0, "temperature": 1.0, "top_k": 0, "top_p": 1.0},
                            model={"path": "/x", "fingerprint": "f" * 16, "name": "tiny-janus"}, prompt="a cat")


def test_save_and_load_round_trip_with_metadata(editor):
    core, nodes = editor.pack.janus_core, editor.nodes
    toks = _tokens(core)
    ui = nodes.JanusARSaveTokens().save(toks, "janus/tokens")["ui"]["janus_tokens_files"]
    assert ui == [{"filename": "tokens_00001_.safetensors", "subfolder": "janus", "type": "output"}]
    nodes.JanusARSaveTokens().save(toks, "janus/tokens")
    out = editor.base / "output" / "janus"
    assert sorted(os.listdir(out)) == ["tokens_00001_.safetensors", "tokens_00002_.safetensors"]
    from safetensors import safe_open

    with safe_open(str(out / "tokens_00001_.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "janus_tokens/1" and json.loads(meta["prompt"]) == "a cat"
    assert json.loads(meta["seeds"]) == [7, 8] and json.loads(meta["settings"])["cfg"] == 5.0
    assert json.loads(meta["model"])["name"] == "tiny-janus"

    (editor.base / "input" / "mine.safetensors").write_bytes((out / "tokens_00002_.safetensors").read_bytes())
    files = nodes.JanusARLoadTokens.INPUT_TYPES()["required"]["file"][0]
    assert files == ["mine.safetensors", "janus/tokens_00001_.safetensors [output]",
                     "janus/tokens_00002_.safetensors [output]"]
    for name in files:
        assert nodes.JanusARLoadTokens.VALIDATE_INPUTS(file=name) is True
        loaded = nodes.JanusARLoadTokens().load(name)[0]
        assert torch.equal(loaded.tokens, toks.tokens) and loaded.tokens.dtype == torch.int64
        assert (loaded.seeds, loaded.settings, loaded.model, loaded.prompt) == (
            toks.seeds, toks.settings, toks.model, toks.prompt)
    assert isinstance(nodes.JanusARLoadTokens.IS_CHANGED(file="mine.safetensors"), str)


@pytest.mark.parametrize("bad", ["../outside.safetensors", "/etc/passwd", "x.txt", "missing.safetensors",
                                 "../input/../../x.safetensors [output]", "link.safetensors", ""])
def test_load_refuses_files_outside_the_folders(editor, tmp_path, bad):
    (tmp_path / "outside.safetensors").write_bytes(b"")
    os.symlink(tmp_path / "outside.safetensors", editor.base / "input" / "link.safetensors")
    load = editor.nodes.JanusARLoadTokens
    assert isinstance(load.VALIDATE_INPUTS(file=bad), str)
    with pytest.raises(editor.pack.janus_core.PayloadError, match="Load Janus Tokens, input 'file'"):
        load().load(bad)


@pytest.mark.parametrize("prefix", ["../evil", "/tmp/evil", "janus/../../evil", "janus/"])
def test_save_refuses_prefixes_outside_the_output_folder(editor, prefix):
    with pytest.raises(editor.pack.janus_core.PayloadError, match="input 'filename_prefix'"):
        editor.nodes.JanusARSaveTokens().save(_tokens(editor.pack.janus_core), prefix)


def test_load_refuses_foreign_safetensors(editor):
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(3)}, str(editor.base / "input" / "lora.safetensors"))
    with pytest.raises(editor.pack.janus_core.PayloadError, match="no 'tokens' tensor"):
        editor.nodes.JanusARLoadTokens().load("lora.safetensors")
    save_file({"tokens": torch.zeros(1, 16, 16, dtype=torch.long)}, str(editor.base / "input" / "small.safetensors"))
    with pytest.raises(editor.pack.janus_core.PayloadError, match="input 'file'.*shape"):
        editor.nodes.JanusARLoadTokens().load("small.safetensors")


def test_token_map_and_info(editor, tiny_models):
    core, nodes = editor.pack.janus_core, editor.nodes
    _, vq = tiny_models
    toks = _tokens(core)
    out = nodes.JanusARTokenMap().render(toks)  # unknown model: colours by id
    image = out["result"][0]
    assert image.shape == (2, 384, 384, 3) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    grid = out["ui"]["janus_grid"]
    assert [g["index"] for g in grid] == [0, 1] and grid[0]["rows"] == grid[0]["cols"] == 24
    assert grid[0]["ids"] == toks.tokens[0].reshape(-1).tolist() and len(grid[0]["rgb"]) == 576 * 3
    assert grid[0]["model"] == "tiny-janus"
    pal = core.id_palette(16384)
    assert grid[1]["rgb"][:3] == pal[toks.tokens[1, 0, 0]].tolist()
    assert torch.equal((image[1, 0, 0] * 255).round().to(torch.uint8), pal[toks.tokens[1, 0, 0]])
    # the producing model's fitted palette once its loader has run
    mine = dataclasses_replace(toks, model=vq.identity.as_dict())
    fitted = nodes.models.palette_for(mine.model)[0]
    assert nodes.JanusARTokenMap().render(mine)["ui"]["janus_grid"][0]["rgb"][:3] == fitted[toks.tokens[0, 0, 0]].tolist()
    info = nodes.JanusARTokensInfo().info(mine)
    text = info["result"][0]
    assert info["ui"]["text"] == [text] and len(info["ui"]["janus_grid"]) == 2
    distinct = int(torch.unique(toks.tokens[0]).numel())
    for part in ("[2, 24, 24]", "seeds: [7, 8]", '"cfg": 5.0', "model: " + vq.identity.name, f"[{distinct}, ",
                 "prompt: a cat", "palette: fitted"):
        assert part in text, part


def dataclasses_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def test_bad_tokens_name_the_input(editor, tiny_models):
    core, nodes = editor.pack.janus_core, editor.nodes
    _, vq = tiny_models
    for bad, what in ((core.JanusTokens(tokens=torch.zeros(1, 16, 16, dtype=torch.long)), "shape"),
                      (core.JanusTokens(tokens=torch.full((1, 24, 24), 16384)), "codebook"),
                      (core.JanusTokens(tokens=torch.zeros(1, 24, 24)), "integer")):
        for call in (lambda t: nodes.JanusARDecode().decode(vq, t), lambda t: nodes.JanusARTokenMap().render(t),
                     lambda t: nodes.JanusARTokensInfo().info(t), lambda t: nodes.JanusARSaveTokens().save(t, "x")):
            with pytest.raises(core.PayloadError, match=f"input 'tokens'.*{what}"):
                call(bad)


def test_encode_any_size_and_refuse_mixed_batches(editor, tiny_models):
    core, nodes = editor.pack.janus_core, editor.nodes
    _, vq = tiny_models
    image = torch.rand(1, 300, 500, 3)
    toks = nodes.JanusAREncode().encode(vq, image)[0]
    assert toks.tokens.shape == (1, 24, 24) and toks.model["name"] == vq.identity.name
    assert vq.model.encoder is None  # the loader's VQ stays decoder-only; the encoder is loaded beside it, once
    assert nodes.models.vq_with_encoder(vq) is nodes.models.vq_with_encoder(vq)
    with pytest.raises(core.PayloadError, match="Janus VQ Encode, input 'image'.*mixes image sizes"):
        nodes.JanusAREncode().encode(vq, [torch.rand(1, 64, 64, 3), torch.rand(1, 32, 64, 3)])
    with pytest.raises(core.PayloadError, match="input 'image'"):
        nodes.JanusAREncode().encode(vq, torch.rand(64, 64, 3))
    two = nodes.JanusAREncode().encode(vq, [torch.rand(1, 64, 64, 3), torch.rand(1, 64, 64, 3)])[0]
    assert two.tokens.shape == (2, 24, 24)
