"""The scene evaluator: what a 384 x 384 picture of the demo grammar shows, from its pixels only, and whether it
shows what a caption asks for.

- background: the nearest palette colour to the median of the border ring;
- objects: every pixel gets its nearest palette colour; for each colour other than the background, its largest
  connected region (on a 4 x 4 pixel grid, so speckle does not count), if it covers at least MIN_AREA of the image;
- position: the centre of the region's bounding box (the grammar's "centre"; a triangle's centroid lies lower),
  as the ninth / third it lies in;
- shape: how much of its bounding box it fills: square ~1, circle ~pi/4, upright triangle ~1/2.

Captions are parsed by the same grammar (`parse_caption`), so any caption of it can be scored, not only the
training ones; `score` says, per caption, whether the background, each object's colour, each named position and
each shape came out right. Used by tests/test_demo_model.py and benchmarks/demo_accuracy.py.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

import numpy as np

from scenes import COLOURS, PALETTE, POSITION_PHRASES, POSITIONS, SHAPES, SIZE

CELL = 4  # connected regions are found on a grid of CELL x CELL pixel cells
MIN_AREA = 0.006  # a colour region smaller than this share of the image is noise, not an object
BORDER = 6  # pixels of the border ring the background is read from
SQUARE_FILL, CIRCLE_FILL = 0.89, 0.64  # fill ratios above which a region is a square / a circle (else a triangle)
_PALETTE = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)


@dataclass(frozen=True)
class Found:
    colour: str
    kind: str
    cx: float
    cy: float
    fill: float
    area: float  # share of the image


@dataclass(frozen=True)
class Wanted:
    colour: str
    kind: str | None
    position: str | None  # a POSITIONS key


def nearest_colours(pixels: np.ndarray) -> np.ndarray:
    """int [..., ] index into COLOURS of each RGB pixel's nearest palette colour."""
    d = ((pixels[..., None, :].astype(np.float32) - _PALETTE) ** 2).sum(-1)
    return d.argmin(-1)


def _largest_region(cells: np.ndarray) -> np.ndarray | None:
    """The largest 4-connected True region of a small bool grid (BFS), as a bool grid."""
    seen = np.zeros_like(cells)
    best, best_size = None, 0
    h, w = cells.shape
    for y0, x0 in zip(*np.nonzero(cells)):
        if seen[y0, x0]:
            continue
        region, queue = [], deque([(y0, x0)])
        seen[y0, x0] = True
        while queue:
            y, x = queue.popleft()
            region.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < h and 0 <= nx < w and cells[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(region) > best_size:
            best_size, best = len(region), region
    if best is None:
        return None
    out = np.zeros_like(cells)
    ys, xs = zip(*best)
    out[list(ys), list(xs)] = True
    return out


def read_picture(image) -> tuple[str, list[Found]]:
    """(background colour, objects) of an RGB image (PIL image or uint8 array [384, 384, 3])."""
    pixels = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if pixels.shape != (SIZE, SIZE, 3) or pixels.dtype != np.uint8:
        raise ValueError(f"expected a {SIZE} x {SIZE} uint8 RGB picture, got {pixels.shape} {pixels.dtype}")
    labels = nearest_colours(pixels)
    ring = np.concatenate([pixels[:BORDER].reshape(-1, 3), pixels[-BORDER:].reshape(-1, 3),
                           pixels[:, :BORDER].reshape(-1, 3), pixels[:, -BORDER:].reshape(-1, 3)])
    background = int(nearest_colours(np.median(ring, axis=0)))
    found = []
    g = SIZE // CELL
    for c in range(len(COLOURS)):
        if c == background:
            continue
        mask = labels == c
        if mask.mean() < MIN_AREA:
            continue
        cells = mask.reshape(g, CELL, g, CELL).mean(axis=(1, 3)) > 0.5
        region = _largest_region(cells)
        if region is None or region.mean() < MIN_AREA:
            continue
        grown = region.copy()  # one cell of margin, so the region's soft edge counts
        grown[1:] |= region[:-1]
        grown[:-1] |= region[1:]
        grown[:, 1:] |= grown[:, :-1]
        grown[:, :-1] |= grown[:, 1:]
        part = mask & np.kron(grown, np.ones((CELL, CELL), dtype=bool))
        ys, xs = np.nonzero(part)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        fill = len(ys) / box
        kind = "square" if fill > SQUARE_FILL else "circle" if fill > CIRCLE_FILL else "triangle"
        cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
        found.append(Found(COLOURS[c], kind, float(cx), float(cy), float(fill), len(ys) / SIZE**2))
    return COLOURS[background], found


def in_position(obj: Found, position: str) -> bool:
    col, row = POSITIONS[position]
    return (col is None or min(2, int(obj.cx * 3 // SIZE)) == col) and (row is None or min(2, int(obj.cy * 3 // SIZE)) == row)


_PHRASE_TO_POSITION = sorted(((p, k) for k, ps in POSITION_PHRASES.items() for p in ps), key=lambda t: -len(t[0]))
_OBJECT = re.compile(r"\b(?:(small|large)\s+)?(" + "|".join(COLOURS) + r")\s+(" + "|".join(SHAPES) + r")\b")


def parse_caption(text: str) -> tuple[str | None, list[Wanted]]:
    """(background colour or None, the objects asked for) from a caption of the grammar."""
    text = text.lower()
    bg = re.search(r"on an? (\w+) background", text)
    background = bg.group(1) if bg and bg.group(1) in COLOURS else None
    body = text[: bg.start()] if bg else text
    wanted = []
    matches = list(_OBJECT.finditer(body))
    for i, m in enumerate(matches):
        tail = body[m.end() : matches[i + 1].start() if i + 1 < len(matches) else len(body)]
        position = next((k for p, k in _PHRASE_TO_POSITION if p in tail), None)
        wanted.append(Wanted(m.group(2), m.group(3), position))
    return background, wanted


def score(caption: str, image) -> dict[str, list[bool]]:
    """Per check of the caption, whether the picture passes it: background (one), colour / position / shape (one
    per object that names it). An object's position and shape are judged on the region of its colour."""
    background, wanted = parse_caption(caption)
    seen_bg, objects = read_picture(image)
    by_colour = {o.colour: o for o in objects}
    out: dict[str, list[bool]] = {"background": [], "colour": [], "position": [], "shape": []}
    if background:
        out["background"].append(seen_bg == background)
    for w in wanted:
        obj = by_colour.get(w.colour)
        out["colour"].append(obj is not None)
        if w.position:
            out["position"].append(obj is not None and in_position(obj, w.position))
        if w.kind:
            out["shape"].append(obj is not None and obj.kind == w.kind)
    return out


def colour_present(image, colour: str) -> bool:
    """Whether any object region of `colour` shows (for the negative-prompt check)."""
    return any(o.colour == colour for o in read_picture(image)[1])
