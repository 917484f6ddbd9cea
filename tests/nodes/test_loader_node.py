"""Janus Model Loader: choices, refusals, download progress, one copy per (checkpoint, dtype, device), memory manager."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch


def _mkckpt(folder, weights=True):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "janus"}))
    (folder / "tokenizer.json").write_text("{}")
    if weights:
        (folder / "model.safetensors").write_bytes(b"")
    return folder


def test_choices_are_checkpoint_folders_then_known_repos(editor, pack):
    root = editor.base / "models" / "Janus-Pro"
    _mkckpt(root / "My-Janus")
    _mkckpt(root / "no-weights", weights=False)
    (root / "empty").mkdir()
    (root / "stray.safetensors").write_bytes(b"")
    choices = editor.nodes.JanusARLoader.INPUT_TYPES()["required"]["model"][0]
    from_hub = list(pack.janus_core.hub.KNOWN_REPOS)
    assert choices == ["janus-demo (bundled)", "My-Janus", "tiny-janus", *from_hub]  # the bundled demo first


def test_extra_model_paths_key_is_kept(editor, tmp_path):
    fp = sys.modules["folder_paths"]
    extra = tmp_path / "big_disk" / "janus"
    _mkckpt(extra / "Janus-Pro-7B")
    fp.folder_names_and_paths.clear()
    fp.add_model_folder_path("Janus-Pro", str(extra))  # what extra_model_paths.yaml does before packs load
    editor.nodes.host.register_model_folder()
    paths = fp.get_folder_paths("Janus-Pro")
    assert paths[0] == str(extra) and paths[1] == str(editor.base / "models" / "Janus-Pro")
    choices = editor.nodes.JanusARLoader.INPUT_TYPES()["required"]["model"][0]
    assert choices[:3] == ["janus-demo (bundled)", "Janus-Pro-7B", "tiny-janus"]
    assert editor.nodes.models.resolve_checkpoint("Janus-Pro-7B") == extra / "Janus-Pro-7B"


@pytest.mark.parametrize("bad", ["../Janus-Pro-1B", "/etc", "tiny-janus/../tiny-janus", "Janus-Pro-1B", "", None])
def test_values_not_offered_are_refused_before_running(editor, bad):
    loader = editor.nodes.JanusARLoader
    result = loader.VALIDATE_INPUTS(model=bad)
    assert isinstance(result, str) and "not among the offered choices" in result
    with pytest.raises(editor.pack.janus_core.CheckpointError):
        loader().load(bad, "auto", "auto")


def test_offered_values_validate(editor, pack):
    loader = editor.nodes.JanusARLoader
    assert loader.VALIDATE_INPUTS(model="tiny-janus") is True
    assert all(loader.VALIDATE_INPUTS(model=r) is True for r in pack.janus_core.hub.KNOWN_REPOS)


def test_known_repo_downloads_into_models_folder_with_progress(editor, monkeypatch, tiny_ckpt):
    models = editor.nodes.models
    calls = []

    def fake_resolve_model(repo, models_dir, tqdm_class=None):
        calls.append((repo, models_dir))
        dest = editor.pack.janus_core.hub.local_name(repo)
        bar = tqdm_class(total=3, desc="Fetching 3 files")
        for f in ("config.json", "tokenizer.json", "model.safetensors"):
            bar.update(1)
        bar.close()
        shutil.copytree(tiny_ckpt, f"{models_dir}/{dest}")
        return editor.base / "models" / "Janus-Pro" / dest

    monkeypatch.setattr(models, "resolve_model", fake_resolve_model)
    folder = models.resolve_checkpoint("deepseek-ai/Janus-Pro-1B", tqdm_class=editor.nodes.loader.download_tqdm("7"))
    assert folder == editor.base / "models" / "Janus-Pro" / "Janus-Pro-1B"
    assert calls == [("deepseek-ai/Janus-Pro-1B", str(editor.base / "models" / "Janus-Pro"))]
    assert [p[:2] for p in editor.rec.progress] == [(1, 3), (2, 3), (3, 3)]
    downloads = [m for e, m in editor.rec.messages if e == "janus.download.progress"]
    assert downloads[-1] == {"node": "7", "file": "Fetching 3 files", "done": 3, "total": 3}
    # second use: the folder is there, nothing is fetched
    assert models.resolve_checkpoint("deepseek-ai/Janus-Pro-1B") == folder and len(calls) == 1


def test_one_copy_per_checkpoint_dtype_device(editor, tiny_models):
    lm, vq = tiny_models
    again = editor.nodes.JanusARLoader().load("tiny-janus", "float32", "cpu")
    assert again[0] is lm and again[1] is vq
    auto = editor.nodes.JanusARLoader().load("tiny-janus", "auto", "auto")  # the stand-in editor: the cpu
    from janus_core.loader import resolve_dtype

    assert auto[0].dtype == resolve_dtype("auto", torch.device("cpu"))  # janus_core's CPU rule, not the editor's
    assert (auto[0] is lm) == (auto[0].dtype == torch.float32)
    assert lm.device == torch.device("cpu") and lm.dtype == torch.float32


def test_bad_device_is_a_clear_error(editor):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(editor.pack.janus_core.JanusError, match="input 'device'.*cuda.*available here: auto, cpu"):
        editor.nodes.JanusARLoader().load("tiny-janus", "auto", "cuda")


def test_memory_manager_loads_before_sampling_and_unload_frees(editor, tiny_models):
    lm, vq = tiny_models
    nodes, rec, mm = editor.nodes, editor.rec, sys.modules["comfy.model_management"]
    lm_patcher, vq_patcher = nodes.models.patcher_of(lm), nodes.models.patcher_of(vq)
    assert lm_patcher is not None and lm_patcher.model is lm.model
    assert vq_patcher is not None and vq_patcher.model is vq.model
    assert (lm_patcher.load_device, lm_patcher.offload_device) == (torch.device("cpu"), torch.device("cpu"))
    cond = nodes.JanusARPrompt().encode(lm, "a cat", "")[0]
    rec.calls.clear()
    rec.interrupt_at = 8  # stop early: only the load order matters here
    with pytest.raises(mm.InterruptProcessingException):
        nodes.JanusARSampler().sample(lm, cond, 1, 1, 5.0, 1.0, 0, 1.0, unique_id="3")
    loads = [c for c in rec.calls if c[0] == "load_models_gpu"]
    assert loads and loads[0][1] == [lm_patcher] and loads[0][2] is True  # full load: no lowvram casting layers
    mm.unload_all_models()  # the editor's "unload models"
    assert ("detach", "JanusGenerator") in rec.calls
    rec.calls.clear()
    rec.interrupt_at = 4
    with pytest.raises(mm.InterruptProcessingException):
        nodes.JanusARSampler().sample(lm, cond, 1, 1, 5.0, 1.0, 0, 1.0, unique_id="3")
    assert [c[1] for c in rec.calls if c[0] == "load_models_gpu"] == [[lm_patcher]]  # loaded back first
    rec.calls.clear()
    nodes.JanusARDecode().decode(vq, editor.pack.janus_core.JanusTokens(tokens=torch.zeros(1, 24, 24, dtype=torch.long)))
    assert [c[1] for c in rec.calls if c[0] == "load_models_gpu"] == [[vq_patcher]]


def test_without_editor_no_patcher_and_plain_device(pack, tiny_ckpt, monkeypatch):
    for name in ("comfy", "comfy.model_management", "comfy.model_patcher", "comfy.utils", "folder_paths", "server"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    models = pack.nodes.models
    if pack.nodes.host.model_patcher_class() is not None:
        pytest.skip("an editor is installed")
    lm = models.load_models(tiny_ckpt, "bfloat16", "cpu")[0]  # a key no other test has loaded
    assert models.patcher_of(lm) is None
    models.ensure_on_device(lm)  # plain .to(device): nothing to do on the CPU, and no editor call
    assert next(lm.model.parameters()).device == lm.device


def test_half_downloaded_repo_is_resumed_not_used(editor, monkeypatch):
    models = editor.nodes.models
    dest = editor.base / "models" / "Janus-Pro" / "Janus-Pro-7B"
    _mkckpt(dest)
    (dest / "model.safetensors").unlink()
    (dest / "model-00001-of-00002.safetensors").write_bytes(b"")
    (dest / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    assert not models.is_checkpoint_folder(dest)
    assert "Janus-Pro-7B" not in models.model_choices()
    calls = []
    hub = sys.modules[models.resolve_model.__module__]  # the pack's own copy of janus_core.hub
    monkeypatch.setattr(hub, "download", lambda repo, where, tqdm_class=None: calls.append((repo, where)) or where)
    assert models.resolve_checkpoint("deepseek-ai/Janus-Pro-7B") == dest
    assert calls == [("deepseek-ai/Janus-Pro-7B", dest)]
    (dest / "model-00002-of-00002.safetensors").write_bytes(b"")
    assert models.is_checkpoint_folder(dest) and "Janus-Pro-7B" in models.model_choices()


def test_is_changed_follows_the_folder_files(editor):
    loader = editor.nodes.JanusARLoader
    root = editor.base / "models" / "Janus-Pro"
    _mkckpt(root / "Mine")
    first = loader.IS_CHANGED(model="Mine")
    assert first and loader.IS_CHANGED(model="Mine", dtype="auto", device="auto", unique_id="1") == first
    (root / "Mine" / "model.safetensors").write_bytes(b"new weights")
    assert loader.IS_CHANGED(model="Mine") != first
    assert loader.IS_CHANGED(model="deepseek-ai/Janus-Pro-7B") == ""  # not downloaded yet


def test_quantize_widget_default_keeps_old_calls_identical(editor, tiny_models):
    loader = editor.nodes.JanusARLoader
    lm, vq = tiny_models  # loaded the way a workflow saved before the widget existed calls it (no quantize)
    assert lm.quantize == "none"
    assert loader().load("tiny-janus", "float32", "cpu", "none", unique_id="1")[0] is lm
    assert loader.IS_CHANGED(model="tiny-janus", dtype="float32", device="cpu", quantize="int8") == \
        loader.IS_CHANGED(model="tiny-janus")
    with pytest.raises(editor.pack.janus_core.JanusError, match="quantize must be one of none, int8, int4"):
        loader().load("tiny-janus", "float32", "cpu", "int2")


def test_quantized_model_is_its_own_cached_copy_with_its_true_size(editor, tiny_models):
    lm, vq = tiny_models
    models = editor.nodes.models
    lm8, vq8 = editor.nodes.JanusARLoader().load("tiny-janus", "float32", "cpu", "int8")
    assert lm8 is not lm and lm8.quantize == "int8" and vq8 is vq  # the VQ does not depend on the choice
    assert editor.nodes.JanusARLoader().load("tiny-janus", "float32", "cpu", "int8")[0] is lm8
    table = lm8.model.embed_tokens.weight
    packed = sum(p.numel() * p.element_size() for p in lm8.model.parameters()) - table.numel() * table.element_size()
    assert models.patcher_of(lm8).size == packed  # quantized bytes, without the host-resident text table
    assert packed < 0.6 * models.patcher_of(lm).size
