"""The public contract saved workflows depend on: node ids, socket types, widget order, defaults.

The committed snapshot (contract_snapshot.json) may only grow: new nodes, new inputs at the end of a section,
new outputs at the end, new combo options. Updating it is a deliberate act:
    JANUS_UPDATE_CONTRACT=1 python -m pytest tests/nodes/test_contract.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .executor import WIDGET_TYPES, input_kind, widget_slots

SNAPSHOT = Path(__file__).with_name("contract_snapshot.json")
DYNAMIC_COMBOS = {("JanusARLoader", "model"), ("JanusARLoadTokens", "file")}
EXPECTED_WIDGETS = {  # DESIGN.md, in order (None = the extra control_after_generate value)
    "JanusARLoader": ["model", "dtype", "device", "quantize"],
    "JanusARPrompt": ["prompt", "negative_prompt"],
    "JanusARSampler": ["seed", None, "batch_size", "cfg", "temperature", "top_k", "top_p", "decoding"],
    "JanusARDecode": [], "JanusAREncode": [], "JanusARTokenMap": [], "JanusARTokensInfo": [],
    "JanusARSaveTokens": ["filename_prefix"], "JanusARLoadTokens": ["file"],
    "JanusARDescribe": ["question", "seed", None, "temperature", "top_p", "max_new_tokens"],
}
EXPECTED_SOCKETS = {
    "JanusARLoader": ([], ["JANUS_LM", "JANUS_VQ"]),
    "JanusARPrompt": (["JANUS_LM"], ["JANUS_COND"]),
    "JanusARSampler": (["JANUS_LM", "JANUS_COND", "JANUS_TOKENS", "MASK"], ["JANUS_TOKENS"]),
    "JanusARDecode": (["JANUS_VQ", "JANUS_TOKENS"], ["IMAGE"]),
    "JanusAREncode": (["JANUS_VQ", "IMAGE"], ["JANUS_TOKENS"]),
    "JanusARTokenMap": (["JANUS_TOKENS", "JANUS_VQ"], ["IMAGE"]),
    "JanusARTokensInfo": (["JANUS_TOKENS"], ["STRING"]),
    "JanusARSaveTokens": (["JANUS_TOKENS"], []),
    "JanusARLoadTokens": ([], ["JANUS_TOKENS"]),
    "JanusARDescribe": (["JANUS_LM", "IMAGE"], ["STRING"]),
}


def describe(node_id: str, cls) -> dict:
    it = cls.INPUT_TYPES()
    inputs = []
    for section in ("required", "optional"):
        for name, spec in it.get(section, {}).items():
            opts = spec[1] if len(spec) > 1 else {}
            entry = {"name": name, "section": section, "type": input_kind(spec)}
            if entry["type"] == "COMBO":
                entry["options"] = None if (node_id, name) in DYNAMIC_COMBOS else list(spec[0])
            for key in ("default", "min", "max", "control_after_generate", "multiline"):
                if key in opts:
                    entry[key] = opts[key]
            inputs.append(entry)
    return {"inputs": inputs, "outputs": list(cls.RETURN_TYPES),
            "output_names": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
            "hidden": dict(it.get("hidden", {}))}


def contract(pack) -> dict:
    return {nid: describe(nid, cls) for nid, cls in pack.NODE_CLASS_MAPPINGS.items()}


def compatible(old: dict, new: dict) -> list[str]:
    """Why `new` would break workflows saved against `old` (empty = only additions)."""
    problems = []
    for nid, o in old.items():
        if nid not in new:
            problems.append(f"{nid}: node removed or renamed")
            continue
        n = new[nid]
        for section in ("required", "optional"):
            oi = [i for i in o["inputs"] if i["section"] == section]
            ni = [i for i in n["inputs"] if i["section"] == section]
            if len(ni) < len(oi):
                problems.append(f"{nid}: {section} inputs removed")
            for a, b in zip(oi, ni):
                where = f"{nid}.{a['name']}"
                for key in ("name", "type", "default", "control_after_generate"):
                    if a.get(key) != b.get(key):
                        problems.append(f"{where}: {key} changed {a.get(key)!r} -> {b.get(key)!r}")
                if a.get("options") is not None and not set(a["options"]) <= set(b.get("options") or []):
                    problems.append(f"{where}: combo options removed")
                if "min" in a and b.get("min", a["min"]) > a["min"]:
                    problems.append(f"{where}: min raised")
                if "max" in a and b.get("max", a["max"]) < a["max"]:
                    problems.append(f"{where}: max lowered")
        if n["outputs"][: len(o["outputs"])] != o["outputs"]:
            problems.append(f"{nid}: outputs changed {o['outputs']} -> {n['outputs']}")
        if any(n["hidden"].get(k) != v for k, v in o["hidden"].items()):
            problems.append(f"{nid}: hidden inputs changed")
    return problems


def test_contract_snapshot_only_grows(pack):
    current = contract(pack)
    if os.environ.get("JANUS_UPDATE_CONTRACT") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=2) + "\n")
    snapshot = json.loads(SNAPSHOT.read_text())
    assert compatible(snapshot, current) == []


def test_compatibility_rules_catch_breaking_changes(pack):
    old = contract(pack)
    additive = json.loads(json.dumps(old))
    additive["JanusARSampler"]["inputs"].insert(8, {"name": "new_widget", "section": "required", "type": "INT"})
    additive["JanusARNew"] = {"inputs": [], "outputs": [], "output_names": [], "hidden": {}}
    assert compatible(old, additive) == []
    for mutate in (
        lambda c: c.pop("JanusARDecode"),
        lambda c: c["JanusARSampler"]["inputs"].insert(0, {"name": "x", "section": "required", "type": "INT"}),
        lambda c: c["JanusARSampler"]["inputs"][2].update(default=1),
        lambda c: c["JanusARLoader"]["inputs"][1]["options"].remove("float16"),
        lambda c: c["JanusARLoader"]["outputs"].reverse(),
        lambda c: c["JanusARSampler"]["inputs"][3].update(max=8),
    ):
        broken = json.loads(json.dumps(old))
        mutate(broken)
        assert compatible(old, broken), mutate


def test_design_widget_order_and_sockets(pack):
    assert set(pack.NODE_CLASS_MAPPINGS) == set(EXPECTED_WIDGETS)
    for nid, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert [name for name, _ in widget_slots(cls)] == EXPECTED_WIDGETS[nid], nid
        it = cls.INPUT_TYPES()
        sockets = [spec[0] for sec in ("required", "optional") for spec in it.get(sec, {}).values()
                   if input_kind(spec) not in WIDGET_TYPES]
        assert (sockets, list(cls.RETURN_TYPES)) == (EXPECTED_SOCKETS[nid][0], EXPECTED_SOCKETS[nid][1]), nid


def test_widget_ranges(pack):
    req = pack.NODE_CLASS_MAPPINGS["JanusARSampler"].INPUT_TYPES()["required"]
    seed = req["seed"][1]
    assert (seed["min"], seed["max"], seed["control_after_generate"]) == (0, 2**64 - 1, True)
    assert (req["batch_size"][1]["min"], req["batch_size"][1]["max"]) == (1, 64)
    cfg = req["cfg"][1]
    assert (cfg["min"], cfg["max"], cfg["step"], cfg["default"]) == (0.0, 20.0, 0.1, 5.0)
    assert req["temperature"][1]["min"] > 0 and req["temperature"][1]["default"] == 1.0
    assert (req["top_k"][1]["min"], req["top_k"][1]["max"], req["top_k"][1]["default"]) == (0, 16384, 0)
    assert (req["top_p"][1]["min"], req["top_p"][1]["max"], req["top_p"][1]["default"]) == (0.0, 1.0, 1.0)
    desc = pack.NODE_CLASS_MAPPINGS["JanusARDescribe"].INPUT_TYPES()["required"]
    assert desc["question"][1]["multiline"] and desc["question"][1]["default"] == "Describe this image in detail."
    assert desc["seed"][1]["control_after_generate"] and desc["seed"][1]["max"] == 2**64 - 1
    assert (desc["temperature"][1]["min"], desc["temperature"][1]["default"]) == (0.0, 0.0)  # 0 = greedy
    assert desc["top_p"][1]["default"] == 1.0 and desc["top_p"][1]["min"] > 0
    assert (desc["max_new_tokens"][1]["min"], desc["max_new_tokens"][1]["default"]) == (1, 512)
    assert pack.NODE_CLASS_MAPPINGS["JanusARDescribe"].OUTPUT_IS_LIST == (True,)
    loader = pack.NODE_CLASS_MAPPINGS["JanusARLoader"].INPUT_TYPES()["required"]
    assert loader["dtype"][0] == ["auto", "bfloat16", "float16", "float32"]
    assert loader["device"][0] == ["auto", "cpu", "cuda", "mps"]
    quantize = pack.NODE_CLASS_MAPPINGS["JanusARLoader"].INPUT_TYPES()["optional"]["quantize"]
    assert quantize[0] == ["none", "int8", "int4"] and quantize[1]["default"] == "none"


VALID_KINDS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "IMAGE", "MASK", "JANUS_LM", "JANUS_VQ", "JANUS_COND",
               "JANUS_TOKENS"}


@pytest.mark.parametrize("node_id", list(EXPECTED_WIDGETS))
def test_node_definition_is_valid_for_the_editor(pack, node_id):
    """What ComfyUI's /object_info and executor read from a V1 class."""
    cls = pack.NODE_CLASS_MAPPINGS[node_id]
    assert pack.NODE_DISPLAY_NAME_MAPPINGS.get(node_id)
    assert cls.CATEGORY == "Janus" and isinstance(cls.DESCRIPTION, str) and cls.DESCRIPTION
    assert isinstance(cls.FUNCTION, str) and callable(getattr(cls, cls.FUNCTION))
    assert isinstance(cls.RETURN_TYPES, tuple) and all(isinstance(t, str) for t in cls.RETURN_TYPES)
    assert len(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)) == len(cls.RETURN_TYPES)
    assert isinstance(cls.OUTPUT_TOOLTIPS, tuple) and len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    it = cls.INPUT_TYPES()
    assert isinstance(it, dict) and set(it) <= {"required", "optional", "hidden"}
    for section in ("required", "optional"):
        for name, spec in it.get(section, {}).items():
            assert isinstance(spec, tuple) and 1 <= len(spec) <= 2, (node_id, name)
            assert input_kind(spec) in VALID_KINDS, (node_id, name)
            opts = spec[1] if len(spec) > 1 else {}
            assert isinstance(opts.get("tooltip"), str) and opts["tooltip"], f"{node_id}.{name} has no tooltip"
            if "default" in opts and input_kind(spec) in ("INT", "FLOAT"):
                assert opts.get("min", -float("inf")) <= opts["default"] <= opts.get("max", float("inf"))
            if input_kind(spec) == "COMBO" and "default" in opts:
                assert opts["default"] in spec[0]
    for name, kind in it.get("hidden", {}).items():
        assert kind in ("UNIQUE_ID", "PROMPT", "EXTRA_PNGINFO", "DYNPROMPT")
    sig = __import__("inspect").signature(getattr(cls, cls.FUNCTION))
    params = set(sig.parameters) - {"self"}
    declared = {n for sec in ("required", "optional", "hidden") for n in it.get(sec, {})}
    assert declared <= params, (node_id, declared - params)


def test_pack_exports(pack):
    assert pack.WEB_DIRECTORY == "./web/js"
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(pack.NODE_CLASS_MAPPINGS)
    assert all(nid.startswith("JanusAR") for nid in pack.NODE_CLASS_MAPPINGS)
