"""Image files -> IMAGE arrays (float32 [H, W, 3] in 0..1), every mode handled deliberately.

- 8-bit modes (RGB, L, P, CMYK, YCbCr, LAB, ...) convert to RGB through Pillow.
- 16-bit and 32-bit integer modes (I;16*, I) are scaled by 65535, not clipped to 255 (Pillow's own convert
  would clip them to white); float mode F is taken as 0..1.
- Transparency (RGBA, LA, PA, P with a transparent colour) is composited over white, as viewers show it.
- Decompression bombs (more than MAX_IMAGE_PIXELS) are refused before decoding; a missing, unreadable,
  truncated or non-image file is an ImageError naming the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import ImageError

MAX_IMAGE_PIXELS = 64_000_000  # 8000 x 8000; Janus works at 384x384, so anything larger is a mistake or a bomb


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im.convert("I") if mode != "I" else im, dtype=np.float64)
        scale = 65535.0 if a.max(initial=0) <= 65535 else float(2**32 - 1)
        g = np.clip(a / scale, 0, 1).astype(np.float32)
        return np.repeat(g[..., None], 3, axis=-1)
    if mode == "F":
        g = np.asarray(im, dtype=np.float32)
        if not np.isfinite(g).all():
            raise ValueError("the float image holds NaN or infinite values")
        return np.repeat(np.clip(g, 0, 1)[..., None], 3, axis=-1)
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def open_image(path: str | Path, name: str = "image") -> Image.Image:
    """One image file, decoded in full (a loaded copy, the file closed); every failure is an ImageError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ImageError(f"{name} {path}: no such file.", input=name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            old, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS
            try:
                with Image.open(path) as im:
                    if im.width * im.height > MAX_IMAGE_PIXELS:
                        raise Image.DecompressionBombError("too many pixels")
                    im.load()
                    picture = im.copy()
            finally:
                Image.MAX_IMAGE_PIXELS = old
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name} {path}: over {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels (refused as a possible "
                         "decompression bomb); scale it down first, Janus works at 384x384.", input=name) from None
    except UnidentifiedImageError:
        raise ImageError(f"{name} {path}: not an image file Pillow can read (PNG, JPEG, WebP, ...).",
                         input=name) from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated / corrupt data
        raise ImageError(f"{name} {path}: cannot decode it ({exc}); the file is truncated or corrupt.",
                         input=name) from None
    if picture.width == 0 or picture.height == 0:
        raise ImageError(f"{name} {path}: the image is empty (0 pixels).", input=name)
    return picture


def read_image(path: str | Path, name: str = "image") -> torch.Tensor:
    """One image file -> float32 [H, W, 3] in 0..1."""
    picture = open_image(path, name)
    try:
        arr = _to_rgb_array(picture)
    except ValueError as exc:
        raise ImageError(f"{name} {path}: {exc}.", input=name) from None
    return torch.from_numpy(np.ascontiguousarray(arr))
