"""Writes example_workflows/*.json (editor UI format v0.4) and example_workflows/api/*.json (API format) from the
compact graphs below and the current node definitions, so socket lists and widget counts always match.

    python -m tests.nodes.build_examples            # JSON only
    python -m tests.nodes.build_examples --thumbs   # + .png thumbnails rendered by tests.nodes.thumbnails

Each graph: nodes (id, type, widget values, pos, optional title) and links (src id, src slot, dst id, dst input).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "example_workflows"
DEFAULT_MODEL = "janus-demo (bundled)"  # runs offline at once; a real model is one widget change away
PROMPT = "a red circle on a blue background"  # a caption of the demo model's grammar (README)

GRAPHS = {
    "text_to_image": {
        "nodes": [
            (1, "JanusARLoader", [DEFAULT_MODEL, "auto", "auto"], (40, 60)),
            (2, "JanusARPrompt", [PROMPT, ""], (440, 60)),
            (3, "JanusARSampler", [42, "randomize", 1, 5.0, 1.0, 0, 1.0], (840, 60)),
            (4, "JanusARDecode", [], (1240, 60)),
            (5, "SaveImage", ["janus/text_to_image"], (1640, 60)),
        ],
        "links": [(1, 0, 2, "lm"), (1, 0, 3, "lm"), (2, 0, 3, "cond"), (1, 1, 4, "vq"), (3, 0, 4, "tokens"),
                  (4, 0, 5, "images")],
    },
    "masked_regeneration": {
        "nodes": [
            (1, "JanusARLoader", [DEFAULT_MODEL, "auto", "auto"], (40, 60)),
            (2, "JanusARPrompt", [PROMPT, ""], (440, 60)),
            (3, "LoadImage", ["example.png", "image"], (40, 380)),
            (4, "JanusAREncode", [], (440, 380)),
            # the masks sit right of Load Image, whose image preview fills the column below it in the editor
            (5, "SolidMask", [0.0, 384, 384], (440, 540), "keep (black)"),
            (6, "SolidMask", [1.0, 192, 384], (440, 740), "regenerate (white)"),
            (7, "MaskComposite", [192, 0, "add"], (840, 480), "right half = regenerate"),
            (8, "JanusARSampler", [7, "fixed", 1, 5.0, 1.0, 0, 1.0], (840, 60)),
            (9, "JanusARDecode", [], (1240, 60)),
            (10, "SaveImage", ["janus/masked_regeneration"], (1640, 60)),
        ],
        "links": [(1, 0, 2, "lm"), (1, 0, 8, "lm"), (2, 0, 8, "cond"), (1, 1, 4, "vq"), (3, 0, 4, "image"),
                  (4, 0, 8, "init_tokens"), (5, 0, 7, "destination"), (6, 0, 7, "source"), (7, 0, 8, "mask"),
                  (1, 1, 9, "vq"), (8, 0, 9, "tokens"), (9, 0, 10, "images")],
    },
    "save_reload_tokens": {
        "nodes": [
            (1, "JanusARLoader", [DEFAULT_MODEL, "auto", "auto"], (40, 60)),
            (2, "JanusARPrompt", [PROMPT, ""], (440, 60)),
            (3, "JanusARSampler", [1234, "fixed", 1, 5.0, 1.0, 0, 1.0], (840, 60)),
            (4, "JanusARSaveTokens", ["janus/example_tokens"], (1240, 60)),
            (5, "JanusARLoadTokens", ["janus/example_tokens_00001_.safetensors [output]"], (840, 480),
             "Load tokens (queue twice)"),
            (6, "JanusARDecode", [], (1240, 400)),
            (7, "SaveImage", ["janus/reloaded"], (1640, 400)),
            (8, "JanusARTokensInfo", [], (1240, 620)),
        ],
        "links": [(1, 0, 2, "lm"), (1, 0, 3, "lm"), (2, 0, 3, "cond"), (3, 0, 4, "tokens"), (1, 1, 6, "vq"),
                  (5, 0, 6, "tokens"), (6, 0, 7, "images"), (5, 0, 8, "tokens")],
    },
    "describe_image": {
        "nodes": [
            (1, "JanusARLoader", [DEFAULT_MODEL, "auto", "auto"], (40, 60)),
            (2, "LoadImage", ["example.png", "image"], (40, 380)),
            (3, "JanusARDescribe", ["Describe this image in detail.", 0, "fixed", 0.0, 1.0, 512], (440, 60)),
        ],
        "links": [(1, 0, 3, "lm"), (2, 0, 3, "image")],
    },
}


def _size(cls, n_widgets: int) -> list[int]:
    from .executor import is_widget, ordered_inputs

    sockets = sum(1 for _, spec, _ in ordered_inputs(cls) if not is_widget(spec))
    rows = max(sockets, len(cls.RETURN_TYPES))
    multiline = any(len(s) > 1 and s[1].get("multiline") for _, s, _ in ordered_inputs(cls))
    return [340, 46 + 22 * rows + 26 * n_widgets + (120 if multiline else 0)]


def build_ui(graph: dict, defs: dict) -> dict:
    from .executor import is_widget, ordered_inputs

    nodes, links = {}, []
    order = {}
    for entry in graph["nodes"]:
        nid, typ, widgets, pos = entry[:4]
        cls = defs[typ]
        inputs = [{"name": name, "type": spec[0], "link": None} for name, spec, _ in ordered_inputs(cls)
                  if not is_widget(spec)]
        names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
        outputs = [{"name": names[i], "type": t, "links": [], "slot_index": i} for i, t in enumerate(cls.RETURN_TYPES)]
        node = {"id": nid, "type": typ, "pos": list(pos), "size": _size(cls, len(widgets)), "flags": {},
                "order": 0, "mode": 0, "inputs": inputs, "outputs": outputs,
                "properties": {"Node name for S&R": typ}, "widgets_values": list(widgets)}
        if len(entry) > 4:
            node["title"] = entry[4]
        nodes[nid] = node
    for lid, (src, slot, dst, name) in enumerate(graph["links"], start=1):
        typ = defs[nodes[src]["type"]].RETURN_TYPES[slot]
        target = next(i for i, inp in enumerate(nodes[dst]["inputs"]) if inp["name"] == name)
        nodes[dst]["inputs"][target]["link"] = lid
        nodes[src]["outputs"][slot]["links"].append(lid)
        links.append([lid, src, slot, dst, target, typ])
    # execution order: a topological order of the graph
    deps = {nid: {lk[1] for lk in links if lk[3] == nid} for nid in nodes}
    done: list[int] = []
    while len(done) < len(nodes):
        for nid in sorted(nodes):
            if nid not in done and deps[nid] <= set(done):
                done.append(nid)
    for i, nid in enumerate(done):
        order[nid] = i
        nodes[nid]["order"] = i
    return {"last_node_id": max(nodes), "last_link_id": len(links), "nodes": [nodes[n] for n in sorted(nodes)],
            "links": links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
            "version": 0.4}  # no "models" list: the editor's missing-model check only knows single files


def main(argv: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    from .conftest import import_pack
    from .executor import CORE_NODES, ui_to_api

    pack = import_pack()
    defs = {**CORE_NODES, **pack.NODE_CLASS_MAPPINGS}
    (OUT / "api").mkdir(parents=True, exist_ok=True)
    for name, graph in GRAPHS.items():
        ui = build_ui(graph, defs)
        for n in ui["nodes"]:
            if n["type"] == "JanusARLoader":
                n["widgets_values"][0] = DEFAULT_MODEL
        (OUT / f"{name}.json").write_text(json.dumps(ui, indent=2) + "\n")
        api = ui_to_api(ui, defs, pack.NODE_DISPLAY_NAME_MAPPINGS)
        (OUT / "api" / f"{name}.json").write_text(json.dumps(api, indent=2) + "\n")
    if "--thumbs" in argv:
        from .thumbnails import render_all

        render_all(OUT)


if __name__ == "__main__":
    main(sys.argv[1:])
