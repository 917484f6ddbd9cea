"""Checkpoint loading: every layout and weight format, dtype handling, what is (not) read, and each error path."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from janus_core import CheckpointError, load, load_generator, load_vq
from janus_core.weights import WeightReader

FORMATS = [("transformers", "safetensors", 1), ("transformers", "safetensors", 3), ("transformers", "bin", 1),
           ("original", "safetensors", 1), ("original", "bin", 1), ("original", "bin", 2)]


@pytest.fixture(scope="module")
def reference_state(tiny_ckpt):
    lm, vq = load(tiny_ckpt, dtype="float32", device="cpu", with_encoder=True)
    return lm.model.state_dict(), vq.model.state_dict()


@pytest.mark.parametrize("layout,fmt,shards", FORMATS)
def test_every_layout_and_format_loads_the_same_weights(make_checkpoint, reference_state, layout, fmt, shards):
    lm, vq = load(make_checkpoint(layout, fmt, shards), dtype="float32", device="cpu", with_encoder=True)
    for ours, ref in ((lm.model.state_dict(), reference_state[0]), (vq.model.state_dict(), reference_state[1])):
        assert ours.keys() == ref.keys()
        for k in ref:
            assert torch.equal(ours[k], ref[k]), k


def test_dtype_cast_while_reading(make_checkpoint):
    lm = load_generator(make_checkpoint("original", "bin", 1, dtype=torch.bfloat16), dtype="float16", device="cpu")
    assert {p.dtype for p in lm.model.parameters()} == {torch.float16}
    vq = load_vq(make_checkpoint("original", "bin", 1, dtype=torch.bfloat16), dtype="auto", device="cpu")
    assert {p.dtype for p in vq.model.parameters()} == {torch.float32}  # VQ auto on CPU: fp32
    auto = load_generator(make_checkpoint(), dtype="auto", device="cpu")
    from janus_core.loader import cpu_bf16_instructions

    assert auto.dtype == (torch.bfloat16 if cpu_bf16_instructions() else torch.float32)


def test_auto_dtype_on_the_cpu_follows_its_bfloat16_instructions(monkeypatch):
    from janus_core import loader

    cpu = torch.device("cpu")
    monkeypatch.setattr(loader, "cpu_bf16_instructions", lambda: None)
    assert loader.resolve_dtype("auto", cpu) == torch.float32
    assert "no native bfloat16" in loader.auto_dtype_reason(cpu)[1]
    monkeypatch.setattr(loader, "cpu_bf16_instructions", lambda: "AMX-BF16")
    assert loader.resolve_dtype("auto", cpu) == torch.bfloat16
    assert "AMX-BF16" in loader.auto_dtype_reason(cpu)[1] and "float32" in loader.auto_dtype_reason(cpu)[1]
    assert loader.resolve_dtype("float32", cpu) == torch.float32  # the exact path stays one choice away


def test_generation_reads_only_what_it_needs(make_checkpoint, monkeypatch):
    read = []
    real = WeightReader.copy_into
    monkeypatch.setattr(WeightReader, "copy_into", lambda self, key, dest: read.append(key) or real(self, key, dest))
    lm, vq = load(make_checkpoint("original", "safetensors", 1), dtype="float32", device="cpu")
    assert read and not [k for k in read if "lm_head" in k or k.startswith(("vision_model.", "aligner."))]
    assert not [k for k in read if ".encoder." in k or "quant_conv" in k and "post_quant" not in k]
    assert vq.model.encoder is None and not hasattr(lm.model, "lm_head")
    read.clear()
    load_vq(make_checkpoint("original", "safetensors", 1), device="cpu", with_encoder=True)
    assert any(".encoder." in k for k in read)


def test_prompt_format_detection(make_checkpoint, tmp_path):
    assert load_generator(make_checkpoint(), device="cpu").prompt_format == "pro"
    no_roles = make_checkpoint(pro_roles=False)
    assert load_generator(no_roles, device="cpu").prompt_format == "janus"
    named = tmp_path / "Janus-1.3B"
    shutil.copytree(make_checkpoint(), named)
    assert load_generator(named, device="cpu").prompt_format == "janus"
    assert load_generator(named, device="cpu", prompt_format="pro").prompt_format == "pro"


# ---- error paths ------------------------------------------------------------------------------------------


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_config(tmp_path):
    with pytest.raises(CheckpointError, match="config.json not found"):
        load_generator(tmp_path, device="cpu")


def test_unknown_layout(tiny_ckpt, tmp_path):
    d = _copy(tiny_ckpt, tmp_path / "c")
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "llava"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unknown checkpoint layout.*llava"):
        load_generator(d, device="cpu")


def test_no_weight_files(tiny_ckpt, tmp_path):
    d = _copy(tiny_ckpt, tmp_path / "c")
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="No weight files"):
        load_generator(d, device="cpu")


def test_missing_shard(make_checkpoint, tmp_path):
    d = _copy(make_checkpoint("original", "bin", 2), tmp_path / "c")
    (d / "pytorch_model-00002-of-00002.bin").unlink()
    with pytest.raises(CheckpointError, match="pytorch_model-00002-of-00002.bin"):
        load_generator(d, device="cpu")


def _rewrite(d, edit):
    sd = load_file(str(d / "model.safetensors"))
    edit(sd)
    save_file(sd, str(d / "model.safetensors"))


def test_missing_key(tiny_ckpt, tmp_path):
    d = _copy(tiny_ckpt, tmp_path / "c")
    key = "model.language_model.layers.1.self_attn.k_proj.weight"
    _rewrite(d, lambda sd: sd.pop(key))
    with pytest.raises(CheckpointError, match=f"missing tensor '{key}'"):
        load_generator(d, device="cpu")


def test_wrong_shape(tiny_ckpt, tmp_path):
    d = _copy(tiny_ckpt, tmp_path / "c")
    key = "model.language_model.layers.0.mlp.down_proj.weight"
    _rewrite(d, lambda sd: sd.__setitem__(key, torch.zeros(64, 100)))
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor .*down_proj.weight has shape \(64, 100\)"):
        load_generator(d, device="cpu")


def test_unexpected_key_but_documented_unused_ones_pass(make_checkpoint, tiny_ckpt, tmp_path):
    load_generator(make_checkpoint("original", "safetensors", 1), device="cpu")  # has codebook_used + attn_pool
    d = _copy(tiny_ckpt, tmp_path / "c")
    _rewrite(d, lambda sd: sd.__setitem__("model.language_model.layers.5.self_attn.q_proj.weight", torch.zeros(1)))
    with pytest.raises(CheckpointError, match=r"unexpected tensors 'model.language_model.layers.5.*model.safetensors"):
        load_generator(d, device="cpu")


def test_truncated_safetensors(tiny_ckpt, tmp_path):
    d = _copy(tiny_ckpt, tmp_path / "c")
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_generator(d, device="cpu")


def test_truncated_pickle(make_checkpoint, tmp_path):
    d = _copy(make_checkpoint("transformers", "bin", 1), tmp_path / "c")
    f = d / "pytorch_model.bin"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="pytorch_model.bin: damaged or truncated .*download it again"):
        load_generator(d, device="cpu")


class NotATensor:
    """Anything a weights-only unpickler must refuse."""


def test_pickle_with_objects_is_refused(make_checkpoint, tmp_path):
    d = _copy(make_checkpoint("transformers", "bin", 1), tmp_path / "c")
    sd = torch.load(d / "pytorch_model.bin", weights_only=True)
    sd["evil"] = NotATensor()
    torch.save(sd, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refused: this pickle holds code or objects other than tensors .*NotATensor"):
        load_generator(d, device="cpu")


def test_bad_tokenizer(tiny_ckpt, tmp_path):
    d = _copy(tiny_ckpt, tmp_path / "c")
    (d / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.json not found"):
        load_generator(d, device="cpu")


def test_load_opens_the_checkpoint_once(make_checkpoint, monkeypatch):
    """config.json parsed, weight headers read and the key map built once for a whole load()."""
    import janus_core.loader as loader
    import janus_core.weights as weights

    calls = {"config": 0, "reader": 0, "vq_keys": 0}
    real_cfg, real_init, real_map = loader.read_checkpoint_config, WeightReader.__init__, loader.vq_key_map

    def count(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(loader, "read_checkpoint_config", count("config", real_cfg))
    monkeypatch.setattr(weights.WeightReader, "__init__", count("reader", real_init))
    monkeypatch.setattr(loader, "vq_key_map", count("vq_keys", real_map))
    load(make_checkpoint("original", "bin", 2), dtype="float32", device="cpu", with_encoder=True)
    assert calls == {"config": 1, "reader": 1, "vq_keys": 1}
