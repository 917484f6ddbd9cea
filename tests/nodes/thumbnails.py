"""Renders each example workflow's graph to same-named .png and .jpg thumbnails (nodes, widget values, typed links),
from the workflow JSON itself, so the picture always matches the file. Used by build_examples --thumbs."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

TYPE_COLOURS = {"JANUS_LM": (186, 104, 200), "JANUS_VQ": (77, 182, 172), "JANUS_COND": (255, 183, 77),
                "JANUS_TOKENS": (100, 181, 246), "IMAGE": (100, 181, 246), "MASK": (129, 199, 132)}
TITLES = {"JanusARLoader": "Janus Model Loader", "JanusARPrompt": "Janus Prompt (CFG)",
          "JanusARSampler": "Janus Token Sampler", "JanusARDecode": "Janus VQ Decode", "JanusAREncode": "Janus VQ Encode",
          "JanusARTokenMap": "Janus Token Map", "JanusARTokensInfo": "Janus Tokens Info",
          "JanusARSaveTokens": "Save Janus Tokens", "JanusARLoadTokens": "Load Janus Tokens",
          "JanusARDescribe": "Janus Describe Image",
          "LoadImage": "Load Image", "SaveImage": "Save Image", "SolidMask": "SolidMask", "MaskComposite": "MaskComposite"}
WIDGET_NAMES = {"JanusARLoader": ["model", "dtype", "device"], "JanusARPrompt": ["prompt", "negative"],
                "JanusARSampler": ["seed", "control", "batch_size", "cfg", "temperature", "top_k", "top_p"],
                "JanusARSaveTokens": ["filename_prefix"], "JanusARLoadTokens": ["file"], "LoadImage": ["image", ""],
                "SaveImage": ["filename_prefix"], "SolidMask": ["value", "width", "height"],
                "MaskComposite": ["x", "y", "operation"],
                "JanusARDescribe": ["question", "seed", "control", "temperature", "top_p", "max_new_tokens"]}
SCALE = 0.62
PAD = 30


def _font(size: int):
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default()


def _box(node) -> tuple[float, float, float, float]:
    x, y = node["pos"]
    w, h = node["size"]
    return x, y - 30, x + w, y + h


def render(workflow: dict) -> Image.Image:
    nodes = {n["id"]: n for n in workflow["nodes"]}
    boxes = {i: _box(n) for i, n in nodes.items()}
    x0 = min(b[0] for b in boxes.values()) - PAD
    y0 = min(b[1] for b in boxes.values()) - PAD
    x1 = max(b[2] for b in boxes.values()) + PAD
    y1 = max(b[3] for b in boxes.values()) + PAD
    size = (int((x1 - x0) * SCALE), int((y1 - y0) * SCALE))
    img = Image.new("RGB", size, (32, 32, 36))
    d = ImageDraw.Draw(img)
    f_title, f_body = _font(15), _font(12)

    def p(x, y):
        return ((x - x0) * SCALE, (y - y0) * SCALE)

    def in_pt(node, slot):
        b = boxes[node["id"]]
        return p(b[0], b[1] + 30 + 11 + 22 * slot)

    def out_pt(node, slot):
        b = boxes[node["id"]]
        return p(b[2], b[1] + 30 + 11 + 22 * slot)

    for lid, src, sslot, dst, dslot, typ in workflow["links"]:
        a, b = out_pt(nodes[src], sslot), in_pt(nodes[dst], dslot)
        colour = TYPE_COLOURS.get(typ, (200, 200, 200))
        mid = (a[0] + b[0]) / 2
        pts = []
        for i in range(21):  # a cubic bezier like the editor's splines
            t = i / 20
            x = (1 - t) ** 3 * a[0] + 3 * (1 - t) ** 2 * t * mid + 3 * (1 - t) * t**2 * mid + t**3 * b[0]
            y = (1 - t) ** 3 * a[1] + 3 * (1 - t) ** 2 * t * a[1] + 3 * (1 - t) * t**2 * b[1] + t**3 * b[1]
            pts.append((x, y))
        d.line(pts, fill=colour, width=3)

    for node in nodes.values():
        b = boxes[node["id"]]
        tl, br = p(b[0], b[1]), p(b[2], b[3])
        d.rounded_rectangle([tl, br], radius=8, fill=(53, 53, 58), outline=(90, 90, 98))
        d.rounded_rectangle([tl, (br[0], tl[1] + 30 * SCALE + 4)], radius=8, fill=(70, 70, 78))
        title = node.get("title") or TITLES.get(node["type"], node["type"])
        d.text((tl[0] + 8, tl[1] + 3), title[:40], fill=(235, 235, 235), font=f_title)
        for i, inp in enumerate(node.get("inputs", [])):
            pt = in_pt(node, i)
            d.ellipse([pt[0] - 4, pt[1] - 4, pt[0] + 4, pt[1] + 4], fill=TYPE_COLOURS.get(inp["type"], (200, 200, 200)))
            d.text((pt[0] + 8, pt[1] - 7), inp["name"], fill=(200, 200, 200), font=f_body)
        for i, out in enumerate(node.get("outputs", [])):
            pt = out_pt(node, i)
            d.ellipse([pt[0] - 4, pt[1] - 4, pt[0] + 4, pt[1] + 4], fill=TYPE_COLOURS.get(out["type"], (200, 200, 200)))
            w = d.textlength(out["name"], font=f_body)
            d.text((pt[0] - 8 - w, pt[1] - 7), out["name"], fill=(200, 200, 200), font=f_body)
        rows = max(len(node.get("inputs", [])), len(node.get("outputs", [])))
        y = b[1] + 30 + 22 * rows + 6
        names = WIDGET_NAMES.get(node["type"], [])
        for j, value in enumerate(node.get("widgets_values", [])):
            label = names[j] if j < len(names) else ""
            if not label:
                continue
            text = f"{label}: {value}" if label != "control" else f"control after generate: {value}"
            if len(text) > 36:
                text = text[:33] + "..."
            wt, wb = p(b[0] + 10, y), p(b[2] - 10, y + 22)
            d.rounded_rectangle([wt, wb], radius=6, fill=(36, 36, 40))
            d.text((wt[0] + 6, wt[1] + 1), text, fill=(220, 220, 220), font=f_body)
            y += 26
    return img


def render_all(folder: Path) -> list[Path]:
    written = []
    for path in sorted(Path(folder).glob("*.json")):
        img = render(json.loads(path.read_text()))
        out = path.with_suffix(".png")
        img.save(out, optimize=True)
        img.save(path.with_suffix(".jpg"), quality=85, optimize=True)  # the editor's template browser asks for .jpg
        written += [out, path.with_suffix(".jpg")]
    return written
