"""The demo model's world: drawn scenes of one or two flat shapes on a one-colour background, their captions,
and questions with answers about them. Everything is drawn on the fly from a seed (no data files).

The grammar is fixed (README, "The demo model"), so anyone can test against it:
- palette: PALETTE below; shapes: circle, square (axis-aligned), triangle (upright);
- sizes: "small" = shape width 15-25 % of the image width, "large" = 35-55 %, unsized = 20-45 %;
- positions: the shape's centre lies in the named third (left, right, top, bottom) or ninth (center, top left,
  top right, bottom left, bottom right); no position = anywhere, fully inside;
- background: a palette colour different from every object's colour, with a mild smooth texture (at most about
  12 levels) and a little pixel noise, so no region is perfectly flat;
- captions: "a [size] <colour> <shape> [<position phrase>] on a <colour> background", or two objects joined by
  "and"; position phrases "at the top left", "at the top", "on the left", "in the center", ...
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np

SIZE = 384
PALETTE = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
    "white": (245, 245, 245), "black": (20, 20, 20), "orange": (245, 140, 30), "purple": (140, 60, 190),
}  # fmt: skip
COLOURS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": (0.15, 0.25), "large": (0.35, 0.55), None: (0.20, 0.45)}  # shape width / image width
# position -> (column, row) thirds it allows; None = any third on that axis
POSITIONS = {
    "left": (0, None), "right": (2, None), "top": (None, 0), "bottom": (None, 2), "center": (1, 1),
    "top left": (0, 0), "top right": (2, 0), "bottom left": (0, 2), "bottom right": (2, 2),
}  # fmt: skip
POSITION_PHRASES = {
    "left": ("on the left", "at the left"), "right": ("on the right", "at the right"),
    "top": ("at the top",), "bottom": ("at the bottom",), "center": ("in the center", "in the middle"),
    "top left": ("at the top left",), "top right": ("at the top right",),
    "bottom left": ("at the bottom left",), "bottom right": ("at the bottom right",),
}  # fmt: skip
TEXTURE_LEVELS = 12  # peak amplitude of the smooth background texture, in 0..255 levels
PIXEL_NOISE = 2.0  # standard deviation of the per-pixel noise, in levels
THIRDS_LEVELS = 7  # "thirds" texture: the background is this much darker / lighter in the left / right third
TEXTURES = ("smooth", "thirds")


@dataclass(frozen=True)
class Shape:
    kind: str  # circle | square | triangle
    colour: str
    size_word: str | None  # small | large | None (unsized)
    position_word: str | None  # a POSITIONS key, or None
    cx: float  # centre, in pixels
    cy: float
    width: float  # bounding-box width in pixels (height too: every shape has a square bounding box)


@dataclass(frozen=True)
class Scene:
    background: str
    shapes: tuple[Shape, ...]
    texture_seed: int = 0
    phrasing: dict = field(default_factory=dict, compare=False)  # which position phrase each shape uses


def _third(index: int | None, half: float, rng: random.Random) -> float:
    """A centre coordinate in third `index` (None = anywhere) with the shape fully inside the image."""
    lo, hi = half, SIZE - half
    if index is not None:
        lo, hi = max(lo, index * SIZE / 3), min(hi, (index + 1) * SIZE / 3)
    if lo > hi:  # a large shape cannot be centred in an edge third and stay inside: as close as it can
        lo = hi = min(max((index + 0.5) * SIZE / 3, half), SIZE - half)
    return rng.uniform(lo, hi)


def _overlaps(a: Shape, b: Shape, gap: float = 6.0) -> bool:
    return abs(a.cx - b.cx) * 2 < a.width + b.width + 2 * gap and abs(a.cy - b.cy) * 2 < a.width + b.width + 2 * gap


def random_shape(rng: random.Random, colour: str, size_word=..., position_word=..., kind=None) -> Shape:
    if size_word is ...:
        size_word = rng.choice(["small", "large", None, None])
    if position_word is ...:
        position_word = rng.choice([None, None, *POSITIONS])
    lo, hi = SIZES[size_word]
    width = rng.uniform(lo, hi) * SIZE
    col, row = POSITIONS[position_word] if position_word else (None, None)
    return Shape(kind or rng.choice(SHAPES), colour, size_word, position_word, _third(col, width / 2, rng),
                 _third(row, width / 2, rng), width)


def random_scene(rng: random.Random, objects: int | None = None) -> Scene:
    """A scene of the grammar; two objects never overlap (each is placed again until they do not)."""
    n = objects or (1 if rng.random() < 0.6 else 2)
    colours = rng.sample(COLOURS, n + 1)
    background, shapes = colours[0], []
    for colour in colours[1:]:
        for _ in range(50):
            # two large shapes rarely fit side by side: the second object is never large
            shape = random_shape(rng, colour, size_word=rng.choice(["small", None]) if shapes else ...)
            if not any(_overlaps(shape, s) for s in shapes):
                break
        else:
            shape = None
        if shape is not None:
            shapes.append(shape)
    phrasing = {i: rng.randrange(2) for i in range(len(shapes))}
    return Scene(background, tuple(shapes), rng.randrange(2**31), phrasing)


# ---- captions, questions and answers --------------------------------------------------------------------------

def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def shape_phrase(shape: Shape, variant: int = 0, with_size: bool = True, with_position: bool = True) -> str:
    words = []
    if with_size and shape.size_word:
        words.append(shape.size_word)
    words += [shape.colour, shape.kind]
    if with_position and shape.position_word:
        phrases = POSITION_PHRASES[shape.position_word]
        words.append(phrases[variant % len(phrases)])
    return f"{article(words[0])} {' '.join(words)}"


def caption(scene: Scene) -> str:
    """The caption the scene was drawn from: what a prompt asks for."""
    parts = [shape_phrase(s, scene.phrasing.get(i, 0)) for i, s in enumerate(scene.shapes)]
    return f"{' and '.join(parts)} on {article(scene.background)} {scene.background} background"


def ninth(shape: Shape) -> str:
    """The position word of the ninth the shape's centre lies in (what a description says)."""
    col = min(2, int(shape.cx * 3 // SIZE))
    row = min(2, int(shape.cy * 3 // SIZE))
    vertical, horizontal = ("top", "", "bottom")[row], ("left", "", "right")[col]
    return " ".join(w for w in (vertical, horizontal) if w) or "center"


def size_word(shape: Shape) -> str | None:
    frac = shape.width / SIZE
    return "small" if frac <= 0.25 else "large" if frac >= 0.35 else None


def description(scene: Scene) -> str:
    """What the understanding half answers to "Describe this image.": every object with the size word its width
    earns, its colour, shape and ninth, and the background."""
    parts = []
    for s in scene.shapes:
        described = Shape(s.kind, s.colour, size_word(s), ninth(s), s.cx, s.cy, s.width)
        parts.append(shape_phrase(described))
    return f"{' and '.join(parts)} on {article(scene.background)} {scene.background} background"


QUESTIONS = {
    "background": ("What colour is the background?", "What color is the background?"),
    "shape": ("What shape is in the picture?", "What shape is in the image?"),
    "describe": ("Describe this image.", "Describe this image in detail.", "What is in this picture?"),
    "count": ("How many shapes are there?",),
    "colour": ("What colour is the {kind}?",),
}
NUMBER_WORDS = {1: "one", 2: "two"}


def question_answers(scene: Scene) -> list[tuple[str, str]]:
    """Every (question, answer) pair this scene supports, all phrasings."""
    out = [(q, scene.background) for q in QUESTIONS["background"]]
    kinds = [s.kind for s in scene.shapes]
    shape_answer = " and ".join(f"a {k}" for k in kinds)  # circle, square, triangle: all take "a"
    out += [(q, shape_answer) for q in QUESTIONS["shape"]]
    out += [(q, description(scene)) for q in QUESTIONS["describe"]]
    out += [(q, NUMBER_WORDS[len(kinds)]) for q in QUESTIONS["count"]]
    for s in scene.shapes:
        if kinds.count(s.kind) == 1:
            out += [(q.format(kind=s.kind), s.colour) for q in QUESTIONS["colour"]]
    return out


# ---- drawing ----------------------------------------------------------------------------------------------------

_AXIS = np.arange(SIZE, dtype=np.float32) + 0.5


def coverage(shape: Shape) -> np.ndarray:
    """float32 [SIZE, SIZE] in 0..1: how much of each pixel the shape covers (a one-pixel soft edge)."""
    x, y = _AXIS[None, :] - shape.cx, _AXIS[:, None] - shape.cy
    half = shape.width / 2
    if shape.kind == "circle":
        sdf = np.sqrt(x * x + y * y) - half
    elif shape.kind == "square":
        sdf = np.maximum(np.abs(x), np.abs(y)) - half
    else:  # upright triangle: apex at the top centre, base along the bottom of the bounding box
        slope = half / shape.width  # half the width over the full height
        norm = math.sqrt(1 + slope * slope)
        sides = (np.abs(x) - slope * (y + half)) / norm
        sdf = np.maximum(np.maximum(sides, y - half), -half - y)
    return np.clip(0.5 - sdf, 0.0, 1.0).astype(np.float32)


def _texture(seed: int) -> np.ndarray:
    """A smooth luminance field in -1..1 (bilinear over a coarse random grid) plus fine noise, float32 [S, S, 1]."""
    rng = np.random.default_rng(seed)
    cells = int(rng.integers(3, 9))
    coarse = rng.uniform(-1, 1, (cells + 1, cells + 1)).astype(np.float32)
    pos = _AXIS / SIZE * cells
    i0 = np.minimum(pos.astype(int), cells - 1)
    f = (pos - i0)[None, :]
    rows = coarse[:, i0] * (1 - f) + coarse[:, i0 + 1] * f  # [cells + 1, S]
    fy = (pos - i0)[:, None]
    field = rows[i0] * (1 - fy) + rows[i0 + 1] * fy
    return field[..., None], rng


_THIRD = (np.minimum(_AXIS // (SIZE / 3), 2) - 1).astype(np.float32)  # -1, 0, 1 by column third


def render(scene: Scene, texture: str = "smooth") -> np.ndarray:
    """uint8 [384, 384, 3]. texture "smooth": a random smooth luminance field of up to TEXTURE_LEVELS; "thirds":
    the whole picture THIRDS_LEVELS darker in the left third and lighter in the right one, so an image token's
    code says which third of its row it lies in (a 1-D position encoding cannot: nothing marks where a row of
    the 24 x 24 grid starts). Both within the grammar's allowance for texture, and pixel noise on top."""
    field, rng = _texture(scene.texture_seed)
    img = np.empty((SIZE, SIZE, 3), dtype=np.float32)
    img[:] = np.array(PALETTE[scene.background], dtype=np.float32)
    for s in scene.shapes:
        a = coverage(s)[..., None]
        img = img * (1 - a) + np.array(PALETTE[s.colour], dtype=np.float32) * a
    if texture == "thirds":
        img += _THIRD[None, :, None] * THIRDS_LEVELS
    else:
        img += field * TEXTURE_LEVELS * float(rng.uniform(0.3, 1.0))
    img += rng.normal(0.0, PIXEL_NOISE, img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)
