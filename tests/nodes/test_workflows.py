"""Every example workflow loads against the current node definitions and runs end to end on the tiny checkpoint
through the in-test executor of the API prompt format (UI -> API conversion included)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from .executor import LoadImage, check_workflow, execute, is_widget, ordered_inputs, ui_to_api

EXAMPLES = Path(__file__).resolve().parents[2] / "example_workflows"
NAMES = sorted(p.stem for p in EXAMPLES.glob("*.json"))


def _example_png(folder: Path) -> None:
    from PIL import Image

    y, x = np.mgrid[0:512, 0:512]
    rgb = np.stack([x / 2, y / 2, (x + y) / 4], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "example.png")  # the editor ships input/example.png; a stand-in here


@pytest.fixture
def workflow_env(editor, node_defs, tiny_models):
    _example_png(editor.base / "input")
    LoadImage.base = str(editor.base / "input")
    return editor


def _load(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def _on_tiny(prompt: dict) -> dict:
    """The saved workflows name the bundled demo model; most tests swap in the tiny one (faster)."""
    for node in prompt.values():
        if node["class_type"] == "JanusARLoader":
            node["inputs"]["model"] = "tiny-janus"
    return prompt


def test_examples_exist_with_thumbnails_and_api_copies():
    assert NAMES == ["describe_image", "masked_regeneration", "save_reload_tokens", "text_to_image"]
    for name in NAMES:
        assert (EXAMPLES / f"{name}.png").is_file(), name
        assert (EXAMPLES / f"{name}.jpg").is_file(), name  # what the editor's template browser shows
        assert (EXAMPLES / "api" / f"{name}.json").is_file(), name


@pytest.mark.parametrize("name", NAMES)
def test_example_loads_against_current_definitions(workflow_env, node_defs, name, pack):
    ui = _load(name)
    assert ui["version"] == 0.4
    assert check_workflow(ui, node_defs) == []
    api = json.loads((EXAMPLES / "api" / f"{name}.json").read_text())
    assert api == ui_to_api(ui, node_defs, pack.NODE_DISPLAY_NAME_MAPPINGS)
    seeded = next(n for n in ui["nodes"] if n["type"] in ("JanusARSampler", "JanusARDescribe"))
    control = seeded["widgets_values"][1 if seeded["type"] == "JanusARSampler" else 2]  # saved after the seed
    assert control in ("randomize", "fixed", "increment", "decrement")


TITLE_H = 30  # the editor draws a node's title bar above its `pos`
PREVIEW_NODES = {"LoadImage", "SaveImage", "PreviewImage"}  # they grow by an image preview as wide as the node


def _footprint(node) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) a node covers in the editor: title bar, body, and the image preview below the widgets."""
    (x, y), (w, h) = node["pos"], node["size"]
    if node["type"] in PREVIEW_NODES:
        h += w  # a square picture scaled to the node's width
    return x, y - TITLE_H, x + w, y + h


@pytest.mark.parametrize("name", NAMES)
def test_no_two_nodes_of_an_example_overlap(name):
    nodes = _load(name)["nodes"]
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            ax0, ay0, ax1, ay1 = _footprint(a)
            bx0, by0, bx1, by1 = _footprint(b)
            overlap = ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1
            assert not overlap, f"{name}: {a.get('title', a['type'])} overlaps {b.get('title', b['type'])}"


def _object_info(node_defs) -> dict:
    """What the editor's /object_info says of each node's inputs (the part the check script reads)."""
    return {cls_name: {"input": {sec: {n: list(spec) for n, spec in cls.INPUT_TYPES().get(sec, {}).items()}
                                 for sec in ("required", "optional")}}
            for cls_name, cls in node_defs.items()}


def _as_an_editor_sends(ui, node_defs) -> dict:
    """app.graphToPrompt(): every widget with its value, so optional widgets a workflow lacks with their default."""
    prompt = ui_to_api(ui, node_defs)
    for node in prompt.values():
        for name, spec, required in ordered_inputs(node_defs[node["class_type"]]):
            if not required and is_widget(spec) and name not in node["inputs"]:
                opts = spec[1] if len(spec) > 1 else {}
                node["inputs"][name] = opts.get("default", spec[0][0] if isinstance(spec[0], (list, tuple)) else None)
    return prompt


@pytest.mark.skipif(shutil.which("node") is None, reason="the editor-side check script is JavaScript: needs node")
def test_the_editor_check_script_accepts_what_an_editor_sends_for_every_example(node_defs, tmp_path):
    """tests/nodes/check_workflows_in_editor.mjs compares through workflow_diff.mjs; fed what an editor sends
    (the loader's optional quantize filled in as "none") it finds no difference for any example, while the old
    strict comparison (no /object_info) reports the issue's `1.quantize extra`."""
    cases = {name: {"expected": json.loads((EXAMPLES / "api" / f"{name}.json").read_text()),
                    "got": _as_an_editor_sends(_load(name), node_defs)} for name in NAMES}
    assert cases["text_to_image"]["got"]["1"]["inputs"]["quantize"] == "none"
    data = tmp_path / "cases.json"
    data.write_text(json.dumps({"cases": cases, "info": _object_info(node_defs)}))
    module = (Path(__file__).parent / "workflow_diff.mjs").as_uri()
    script = (f"import {{ diffPrompt }} from {json.dumps(module)}; import fs from 'node:fs';"
              f"const d = JSON.parse(fs.readFileSync({json.dumps(str(data))}, 'utf8')); const out = {{}};"
              "for (const [n, c] of Object.entries(d.cases)) out[n] = [diffPrompt(c.expected, c.got, d.info),"
              " diffPrompt(c.expected, c.got)]; console.log(JSON.stringify(out));")
    proc = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert sorted(out) == NAMES and "describe_image" in out
    assert {name: found for name, (found, _) in out.items()} == {name: [] for name in NAMES}
    assert all("1.quantize extra" in strict for _, strict in out.values())


def test_broken_workflows_are_reported(node_defs):
    ui = _load("text_to_image")
    ui["nodes"][2]["widgets_values"].pop(1)  # a workflow saved without the control value
    ui["links"][2][5] = "IMAGE"  # prompt -> sampler cond
    ui["nodes"][0]["type"] = "JanusModelLoader"  # another pack's id
    problems = "\n".join(check_workflow(ui, node_defs))
    assert "6 widget values, definition has 8" in problems  # 7 required + the optional decoding
    assert "unknown type JanusModelLoader" in problems
    assert "saved as IMAGE" in problems


def test_text_to_image_runs_and_reruns_identically(workflow_env, node_defs):
    prompt = _on_tiny(ui_to_api(_load("text_to_image"), node_defs))
    results, uis, errors = execute(prompt, node_defs)
    assert errors == {}
    images = uis["5"]["images"]
    assert len(images) == 1 and images[0]["tensor"].shape == (384, 384, 3)
    again, uis2, _ = execute(prompt, node_defs)  # a fresh run, no cache: same seed -> same pixels
    assert torch.equal(again["3"][0].tokens, results["3"][0].tokens)
    assert torch.equal(uis2["5"]["images"][0]["tensor"], images[0]["tensor"])


def test_text_to_image_runs_as_saved_on_the_bundled_demo_model(workflow_env, node_defs):
    """What a new user gets by pressing Run: the saved graph, untouched, draws its caption offline."""
    import sys

    sys.path.insert(0, str(EXAMPLES.parent / "training"))
    from evaluate import read_picture

    prompt = ui_to_api(_load("text_to_image"), node_defs)
    assert prompt["1"]["inputs"]["model"] == "janus-demo (bundled)"
    assert "decoding" not in prompt["3"]["inputs"]  # saved before the widget existed: runs with the default
    results, uis, errors = execute(prompt, node_defs)
    assert errors == {}
    assert results["3"][0].settings["decoding"] == "jacobi"  # the default on the CPU
    picture = (uis["5"]["images"][0]["tensor"].numpy() * 255).round().astype("uint8")
    background, objects = read_picture(picture)
    text = prompt["2"]["inputs"]["prompt"]
    assert background in text or any(o.colour in text for o in objects), (text, background, objects)


def test_text_to_image_runs_quantized(workflow_env, node_defs):
    """The saved workflow with the loader's quantize widget set: int4 (the 8-wide aligner layer stays float)."""
    prompt = _on_tiny(ui_to_api(_load("text_to_image"), node_defs))
    assert "quantize" not in prompt["1"]["inputs"]  # saved before the widget existed: runs with the default
    prompt["1"]["inputs"]["quantize"] = "int4"
    results, uis, errors = execute(prompt, node_defs)
    assert errors == {}
    assert results["1"][0].quantize == "int4" and results["3"][0].settings["quantize"] == "int4"
    assert {m.quant for m in results["1"][0].model.modules() if hasattr(m, "quant")} == {"int4", "none"}
    images = uis["5"]["images"]
    assert len(images) == 1 and images[0]["tensor"].shape == (384, 384, 3)
    assert bool(torch.isfinite(images[0]["tensor"]).all())


def test_masked_regeneration_keeps_the_unmasked_half(workflow_env, node_defs):
    prompt = _on_tiny(ui_to_api(_load("masked_regeneration"), node_defs))
    results, uis, errors = execute(prompt, node_defs)
    assert errors == {}
    encoded, regenerated = results["4"][0].tokens, results["8"][0].tokens
    assert torch.equal(regenerated[:, :, :12], encoded[:, :, :12])  # left half black in the mask: kept
    assert not torch.equal(regenerated[:, :, 12:], encoded[:, :, 12:])  # right half white: sampled anew
    assert results["8"][0].settings["partial"] is True
    assert uis["10"]["images"][0]["tensor"].shape == (384, 384, 3)


def test_save_reload_tokens(workflow_env, node_defs):
    prompt = _on_tiny(ui_to_api(_load("save_reload_tokens"), node_defs))
    cache: dict = {}
    # first queue: the token file does not exist yet, so only the save branch validates and runs (as in the editor)
    results, uis, errors = execute(prompt, node_defs, cache=cache)
    sampled = results["3"][0]
    assert set(errors) == {"5"} and "does not exist" in errors["5"][0]
    assert uis["4"]["janus_tokens_files"][0]["filename"] == "example_tokens_00001_.safetensors"
    # second queue: the load branch runs; loader, prompt, sampler and save come from the cache (IS_CHANGED holds)
    ran: list = []
    results, uis, errors = execute(prompt, node_defs, cache=cache, executed=ran)
    assert errors == {}
    assert sorted(ran) == ["5", "6", "7", "8"]
    reloaded = results["5"][0]
    assert torch.equal(sampled.tokens, reloaded.tokens) and reloaded.seeds == [1234]
    assert reloaded.prompt == sampled.prompt and reloaded.settings == sampled.settings
    assert "seeds: [1234]" in uis["8"]["text"][0]
    assert uis["7"]["images"][0]["tensor"].shape == (384, 384, 3)


def test_describe_image_shows_the_library_answer(workflow_env, node_defs):
    from janus_core import describe

    prompt = _on_tiny(ui_to_api(_load("describe_image"), node_defs))
    prompt["3"]["inputs"]["max_new_tokens"] = 8  # the saved 512 is what users want; the tiny model needs few
    results, uis, errors = execute(prompt, node_defs)
    assert errors == {}
    texts = results["3"][0]
    assert isinstance(texts, list) and len(texts) == 1 and isinstance(texts[0], str)
    assert uis["3"]["text"] == texts  # shown on the node
    image = results["2"][0]
    lm = results["1"][0]
    assert texts == describe(lm, image, "Describe this image in detail.", max_new_tokens=8)
