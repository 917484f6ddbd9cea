"""A small executor of the editor's API prompt format, the UI->API workflow conversion and workflow checks.

Follows ComfyUI 0.3.x semantics where they matter to the pack: widgets are read from `widgets_values` by
position (a `control_after_generate` widget saves one extra value, an `image_upload` combo one more);
validation checks types, ranges and combo choices unless the node's VALIDATE_INPUTS takes that input;
only output nodes and their ancestors run, outputs whose validation fails are left out; everything runs
under torch.inference_mode(); a node returns a tuple or {"ui": ..., "result": ...}.
"""

from __future__ import annotations

import inspect
import math
import os

import numpy as np
import torch

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


# ----------------------------------------------------------------------------------------------- core nodes
class LoadImage:
    base = None  # input directory, set by the test

    @classmethod
    def INPUT_TYPES(cls):
        files = sorted(os.listdir(cls.base)) if cls.base and os.path.isdir(cls.base) else []
        return {"required": {"image": (files, {"image_upload": True})}}

    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"

    def load_image(self, image):
        from PIL import Image

        img = Image.open(os.path.join(self.base, image))
        rgb = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)[None]
        if "A" in img.getbands():
            mask = 1.0 - torch.from_numpy(np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0)[None]
        else:
            mask = torch.zeros((1, 64, 64))
        return (rgb, mask)


class SaveImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save_images"

    def save_images(self, images, filename_prefix="ComfyUI"):
        return {"ui": {"images": [{"filename": f"{filename_prefix}_{i:05}_.png", "tensor": images[i]}
                                  for i in range(images.shape[0])]}}


class PreviewImage(SaveImage):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}

    def save_images(self, images, filename_prefix="preview"):
        return super().save_images(images, "preview")


class SolidMask:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "value": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            "width": ("INT", {"default": 512, "min": 1, "max": 16384, "step": 1}),
            "height": ("INT", {"default": 512, "min": 1, "max": 16384, "step": 1}),
        }}

    RETURN_TYPES = ("MASK",)
    FUNCTION = "solid"

    def solid(self, value, width, height):
        return (torch.full((1, height, width), value, dtype=torch.float32),)


class MaskComposite:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "destination": ("MASK",), "source": ("MASK",),
            "x": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 1}),
            "y": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 1}),
            "operation": (["multiply", "add", "subtract", "and", "or", "xor"],),
        }}

    RETURN_TYPES = ("MASK",)
    FUNCTION = "combine"

    def combine(self, destination, source, x, y, operation):
        out = destination.reshape((-1, destination.shape[-2], destination.shape[-1])).clone()
        src = source.reshape((-1, source.shape[-2], source.shape[-1]))
        right, bottom = min(x + src.shape[-1], out.shape[-1]), min(y + src.shape[-2], out.shape[-2])
        region = out[:, y:bottom, x:right]
        s = src[:, : bottom - y, : right - x]
        ops = {"multiply": region * s, "add": region + s, "subtract": region - s}
        out[:, y:bottom, x:right] = ops[operation] if operation in ops else torch.maximum(region, s)
        return (out.clamp(0.0, 1.0),)


CORE_NODES = {c.__name__: c for c in (LoadImage, SaveImage, PreviewImage, SolidMask, MaskComposite)}


# ----------------------------------------------------------------------------------------------- definitions
def input_kind(spec) -> str:
    t = spec[0]
    if isinstance(t, (list, tuple)):
        return "COMBO"
    return t


def is_widget(spec) -> bool:
    return input_kind(spec) in WIDGET_TYPES


def ordered_inputs(cls) -> list[tuple[str, tuple, bool]]:
    """(name, spec, required) in declaration order: required first, then optional."""
    it = cls.INPUT_TYPES()
    out = [(n, s, True) for n, s in it.get("required", {}).items()]
    out += [(n, s, False) for n, s in it.get("optional", {}).items()]
    return out


def widget_slots(cls) -> list[tuple[str | None, tuple | None]]:
    """One entry per saved widget value: (input name, spec), or (None, None) for an extra (control / upload) value."""
    slots = []
    for name, spec, _ in ordered_inputs(cls):
        if not is_widget(spec):
            continue
        slots.append((name, spec))
        opts = spec[1] if len(spec) > 1 else {}
        if opts.get("control_after_generate") or opts.get("image_upload"):
            slots.append((None, None))
    return slots


def required_widget_count(cls) -> int:
    """Saved values of the required widgets (they come first: the optional ones follow)."""
    required = {name for name, _, req in ordered_inputs(cls) if req}
    slots = widget_slots(cls)
    count = 0
    for i, (name, _) in enumerate(slots):
        if name in required or (name is None and slots[i - 1][0] in required):
            count = i + 1
    return count


# ----------------------------------------------------------------------------------------------- UI workflow
def check_workflow(workflow: dict, defs: dict) -> list[str]:
    """Problems of a v0.4 UI workflow against the node definitions (empty list = it loads)."""
    problems = []
    for key in ("last_node_id", "last_link_id", "nodes", "links", "version"):
        if key not in workflow:
            problems.append(f"missing top-level key {key}")
    nodes = {n["id"]: n for n in workflow.get("nodes", [])}
    for n in nodes.values():
        if n["type"] not in defs:
            problems.append(f"node {n['id']}: unknown type {n['type']}")
            continue
        cls = defs[n["type"]]
        slots = widget_slots(cls)
        custom = getattr(cls, "VALIDATE_INPUTS", None)
        custom_args = set(inspect.signature(custom).parameters) if custom else set()
        values = n.get("widgets_values", [])
        # the editor fills widgets a workflow has no value for with their defaults; only optional inputs may be
        # left out, because a prompt without a required input fails validation
        if not required_widget_count(cls) <= len(values) <= len(slots):
            problems.append(f"node {n['id']} {n['type']}: {len(values)} widget values, definition has {len(slots)}")
            continue
        for (name, spec), value in zip(slots, values):
            if name is None or name in custom_args:  # checked by the node's VALIDATE_INPUTS at queue time
                continue
            err = check_value(spec, value)
            if err:
                problems.append(f"node {n['id']} {n['type']} widget {name}: {err}")
        socket_names = [nm for nm, spec, _ in ordered_inputs(cls) if not is_widget(spec)]
        for inp in n.get("inputs", []):
            if inp["name"] not in socket_names and "widget" not in inp:
                problems.append(f"node {n['id']} {n['type']}: input {inp['name']} not in the definition")
        for i, out in enumerate(n.get("outputs", [])):
            if i >= len(cls.RETURN_TYPES) or out["type"] != cls.RETURN_TYPES[i]:
                problems.append(f"node {n['id']} {n['type']}: output {i} type {out['type']} does not match")
    for link in workflow.get("links", []):
        lid, src, src_slot, dst, dst_slot, typ = link
        if src not in nodes or dst not in nodes:
            problems.append(f"link {lid}: dangling")
            continue
        s, d = nodes[src], nodes[dst]
        if s["type"] not in defs or d["type"] not in defs:
            continue
        out_type = defs[s["type"]].RETURN_TYPES[src_slot]
        target = d["inputs"][dst_slot]
        spec = {nm: sp for nm, sp, _ in ordered_inputs(defs[d["type"]])}.get(target["name"])
        if spec is None:
            problems.append(f"link {lid}: target input {target['name']} unknown")
            continue
        if out_type != typ or input_kind(spec) != out_type:
            problems.append(f"link {lid}: {s['type']}.{src_slot} ({out_type}) -> {d['type']}.{target['name']} "
                            f"({input_kind(spec)}), saved as {typ}")
        if target.get("link") != lid:
            problems.append(f"link {lid}: target input {target['name']} records link {target.get('link')}")
    return problems


def ui_to_api(workflow: dict, defs: dict, display_names: dict | None = None) -> dict:
    """The editor's "Export (API)": widget values by position, socket links as [source id, output slot]."""
    links = {lk[0]: lk for lk in workflow["links"]}
    prompt = {}
    for n in workflow["nodes"]:
        if n.get("mode", 0) != 0:
            continue  # muted / bypassed nodes are not sent
        cls = defs[n["type"]]
        inputs = {}
        for (name, _spec), value in zip(widget_slots(cls), n.get("widgets_values", [])):  # missing: defaults
            if name is not None:
                inputs[name] = value
        for inp in n.get("inputs", []):
            if inp.get("link") is not None:
                lk = links[inp["link"]]
                inputs[inp["name"]] = [str(lk[1]), lk[2]]
        prompt[str(n["id"])] = {"class_type": n["type"], "inputs": inputs,
                                "_meta": {"title": n.get("title") or (display_names or {}).get(n["type"], n["type"])}}
    return prompt


# ----------------------------------------------------------------------------------------------- validation
def check_value(spec, value) -> str | None:
    kind = input_kind(spec)
    opts = spec[1] if len(spec) > 1 else {}
    if kind == "COMBO":
        return None if value in spec[0] else f"{value!r} not among the choices"
    if kind == "INT" and (not isinstance(value, int) or isinstance(value, bool)):
        return f"{value!r} is not an INT"
    if kind == "FLOAT" and not isinstance(value, (int, float)):
        return f"{value!r} is not a FLOAT"
    if kind in ("INT", "FLOAT"):
        if "min" in opts and value < opts["min"]:
            return f"{value} < min {opts['min']}"
        if "max" in opts and value > opts["max"]:
            return f"{value} > max {opts['max']}"
    if kind == "STRING" and not isinstance(value, str):
        return f"{value!r} is not a STRING"
    return None


def _validate_node(node_id: str, prompt: dict, defs: dict, errors: dict, seen: set) -> bool:
    if node_id in seen:
        return node_id not in errors
    seen.add(node_id)
    node = prompt[node_id]
    if node["class_type"] not in defs:
        errors[node_id] = [f"unknown class {node['class_type']}"]
        return False
    cls = defs[node["class_type"]]
    ok = True
    custom = getattr(cls, "VALIDATE_INPUTS", None)
    custom_args = set(inspect.signature(custom).parameters) if custom else set()
    mine = []
    for name, spec, required in ordered_inputs(cls):
        if name not in node["inputs"]:
            if required:
                mine.append(f"required input {name} missing")
            continue
        value = node["inputs"][name]
        if isinstance(value, list):
            src, slot = value
            if src not in prompt:
                mine.append(f"input {name}: source node {src} missing")
                continue
            src_cls = defs.get(prompt[src]["class_type"])
            if src_cls is None or src_cls.RETURN_TYPES[slot] != input_kind(spec):
                mine.append(f"input {name}: type mismatch")
            ok = _validate_node(src, prompt, defs, errors, seen) and ok
        elif name not in custom_args:
            err = check_value(spec, value)
            if err:
                mine.append(f"input {name}: {err}")
    if custom and not mine:
        kwargs = {k: v for k, v in node["inputs"].items() if k in custom_args and not isinstance(v, list)}
        result = custom(**kwargs)
        if result is not True:
            mine.append(str(result))
    if mine:
        errors[node_id] = mine
    return ok and not mine


def validate_prompt(prompt: dict, defs: dict) -> tuple[list[str], dict]:
    """(output node ids that can run, errors by node id)."""
    errors: dict = {}
    seen: set = set()
    good = []
    for node_id, node in prompt.items():
        cls = defs.get(node["class_type"])
        if (cls is not None and getattr(cls, "OUTPUT_NODE", False)
                and _validate_node(node_id, prompt, defs, errors, seen)):
            good.append(node_id)
    return good, errors


# ----------------------------------------------------------------------------------------------- execution
def _hidden_values(cls, node_id: str) -> dict:
    return {name: node_id for name, kind in cls.INPUT_TYPES().get("hidden", {}).items() if kind == "UNIQUE_ID"}


def is_changed(cls, node: dict, node_id: str):
    """IS_CHANGED as the editor calls it: every constant input plus the hidden ones; an exception -> NaN."""
    fn = getattr(cls, "IS_CHANGED", None)
    if fn is None:
        return False
    kwargs = {k: v for k, v in node["inputs"].items() if not isinstance(v, list)}
    try:
        return fn(**kwargs, **_hidden_values(cls, node_id))
    except Exception:  # noqa: BLE001 - the editor logs a warning and re-runs the node every time
        return float("nan")


def execute(prompt: dict, defs: dict, outputs: list[str] | None = None, cache: dict | None = None,
            executed: list | None = None) -> tuple[dict, dict, dict]:
    """Run the prompt; returns (results by node id, ui by node id, validation errors).

    `cache` (kept by the caller between runs) reuses outputs of nodes whose class, constant inputs, IS_CHANGED
    value and ancestors are unchanged, like the editor's default cache (output nodes too). A NaN from
    IS_CHANGED never matches. `executed` collects the ids of the nodes that really ran."""
    good, errors = validate_prompt(prompt, defs)
    if outputs is not None:
        good = [o for o in good if o in outputs]
    if not good:
        raise RuntimeError(f"prompt has no runnable output: {errors}")
    results: dict = {}
    uis: dict = {}
    keys: dict = {}

    def signature(node_id: str) -> str:
        if node_id not in keys:
            node = prompt[node_id]
            parts = {k: (signature(v[0]), v[1]) if isinstance(v, list) else v for k, v in node["inputs"].items()}
            changed = is_changed(defs[node["class_type"]], node, node_id)
            if isinstance(changed, float) and math.isnan(changed):
                changed = object()  # unique: never equal to an earlier run's key
            keys[node_id] = repr((node["class_type"], changed, sorted(parts.items(), key=lambda kv: kv[0])))
        return keys[node_id]

    def run(node_id: str):
        if node_id in results:
            return results[node_id]
        node = prompt[node_id]
        cls = defs[node["class_type"]]
        if cache is not None and signature(node_id) in cache:
            results[node_id], ui = cache[signature(node_id)]
            if ui is not None:
                uis[node_id] = ui
            return results[node_id]
        kwargs = {}
        for name, value in node["inputs"].items():
            kwargs[name] = run(value[0])[value[1]] if isinstance(value, list) else value
        kwargs.update(_hidden_values(cls, node_id))
        if executed is not None:
            executed.append(node_id)
        out = getattr(cls(), cls.FUNCTION)(**kwargs)
        if isinstance(out, dict):
            if "ui" in out:
                uis[node_id] = out["ui"]
            out = out.get("result", ())
        results[node_id] = tuple(out)
        if cache is not None:
            cache[signature(node_id)] = (results[node_id], uis.get(node_id))
        return results[node_id]

    with torch.inference_mode():
        for node_id in good:
            run(node_id)
    return results, uis, errors
