"""VQ decode (tokens -> IMAGE) and encode (IMAGE -> tokens), in memory-bounded chunks.

Images are the editor's layout: float32 [B, H, W, 3] in 0..1 on the CPU.
Encode policy for non-384 inputs (the Janus-Pro training recipe): resize the short side to 384
(bicubic, antialiased), then centre-crop the long side to 384.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ImageError, PayloadError
from .payloads import GRID, IMAGE_SIZE, JanusTokens, JanusVQ

CPU_BUDGET_BYTES = 4 << 30


def per_image_bytes(vq: JanusVQ) -> int:
    """Rough peak activation memory of decoding one image: a few live copies of the widest full-res feature map."""
    dec = vq.model.decoder
    elem = torch.empty((), dtype=vq.dtype).element_size()
    widest = max(level.res[-1].conv2.out_channels * (IMAGE_SIZE // 2 ** (len(dec.conv_blocks) - 1 - i)) ** 2
                 for i, level in enumerate(dec.conv_blocks))
    return 5 * widest * elem


def chunk_size(vq: JanusVQ, batch: int, budget_bytes: int | None = None) -> int:
    """Images per decode call so the chunk's activations fit the budget (default: half the free accelerator
    memory, or 4 GiB on the CPU)."""
    if budget_bytes is None:
        if vq.device.type == "cuda":
            budget_bytes = torch.cuda.mem_get_info(vq.device)[0] // 2
        else:
            budget_bytes = CPU_BUDGET_BYTES
    return max(1, min(batch, budget_bytes // per_image_bytes(vq)))


def check_tokens(tokens, codebook_size: int, what: str = "tokens") -> torch.Tensor:
    t = tokens.tokens if isinstance(tokens, JanusTokens) else tokens
    if not isinstance(t, torch.Tensor):
        raise PayloadError(f"{what} must be JANUS_TOKENS, got {type(tokens).__name__}.", input=what)
    if t.dim() == 2 and t.shape[1] == GRID * GRID:
        t = t.view(-1, GRID, GRID)
    if t.dim() != 3 or tuple(t.shape[1:]) != (GRID, GRID):
        raise PayloadError(f"{what} have shape {tuple(t.shape)}; expected [B, {GRID}, {GRID}] (384x384 images).",
                           input=what)
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise PayloadError(f"{what} must be integer codebook indices, got {t.dtype}.", input=what)
    if t.shape[0] == 0:
        raise PayloadError(f"{what} are empty (batch of 0); connect tokens of at least one image.", input=what)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= codebook_size):
        raise PayloadError(f"{what} hold indices outside the codebook 0..{codebook_size - 1} "
                           f"(min {int(t.min())}, max {int(t.max())}): they come from another model or file.", input=what)
    return t.long()


@torch.inference_mode()
def decode_tokens(vq: JanusVQ, tokens, budget_bytes: int | None = None, progress=None) -> torch.Tensor:
    """JANUS_TOKENS or int [B, 24, 24] -> float32 [B, 384, 384, 3] in 0..1 (CPU)."""
    t = check_tokens(tokens, vq.codebook_size)
    n = chunk_size(vq, t.shape[0], budget_bytes)
    out = torch.empty((t.shape[0], IMAGE_SIZE, IMAGE_SIZE, 3), dtype=torch.float32)
    for start in range(0, t.shape[0], n):
        px = vq.model.decode_tokens(t[start : start + n].to(vq.device))
        out[start : start + n] = ((px.float() + 1) / 2).clamp_(0, 1).permute(0, 2, 3, 1).cpu()
        del px
        if progress is not None:
            progress(min(start + n, t.shape[0]), t.shape[0])
    return out


MAX_PIXELS = 64_000_000  # per image; larger arrays are almost surely a mistake (and need GBs as float32)
MAX_ASPECT = 4.0  # longer sides are centre-cropped to this ratio before resizing (the final crop is square anyway)
RANGE_SLACK = 1e-3  # resamplers overshoot 0..1 slightly; more than this is a wrong scale, not overshoot


def check_images(images, name: str = "images") -> torch.Tensor:
    """IMAGE float [B, H, W, 3] (or one [H, W, 3]) in 0..1, finite -> float32 tensor; anything else is refused."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise ImageError(f"{name} must be an image tensor [B, H, W, 3] of floats in 0..1, got "
                         f"{type(images).__name__}.", input=name)
    x = images[None] if images.dim() == 3 else images
    if x.dim() != 4 or x.shape[-1] != 3:
        hint = " (RGBA: composite or drop the alpha channel first)" if x.dim() == 4 and x.shape[-1] == 4 else ""
        raise ImageError(f"{name} has shape {tuple(images.shape)}; expected [B, H, W, 3] (RGB, channels last){hint}.",
                         input=name)
    b, h, w, _ = x.shape
    if b == 0 or h == 0 or w == 0:
        raise ImageError(f"{name} is empty (shape {tuple(x.shape)}); connect at least one image.", input=name)
    if h * w > MAX_PIXELS:
        raise ImageError(f"{name}: {w}x{h} is {h * w / 1e6:.0f} megapixels, over the {MAX_PIXELS / 1e6:.0f} MP this "
                         "accepts; scale it down first (it is resized to 384x384 anyway).", input=name)
    if not x.dtype.is_floating_point:
        hint = " If they are 0..255 bytes, divide by 255." if x.dtype == torch.uint8 else ""
        raise ImageError(f"{name} must hold floats in 0..1, got {str(x.dtype).replace('torch.', '')}.{hint}",
                         input=name)
    x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise ImageError(f"{name} hold NaN or infinite values; fix the node or file that made them.", input=name)
    lo, hi = float(x.min()), float(x.max())
    if lo < -RANGE_SLACK or hi > 1 + RANGE_SLACK:
        hint = " They look like 0..255 values: divide by 255." if hi > 2 and lo >= 0 else ""
        raise ImageError(f"{name} must be in 0..1, found values {lo:g}..{hi:g}.{hint}", input=name)
    return x.clamp(0, 1)


def to_model_pixels(images: torch.Tensor) -> torch.Tensor:
    """[B, H, W, 3] in 0..1 -> [B, 3, 384, 384] in -1..1 (short side to 384, centre crop)."""
    x = check_images(images).permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    if max(h, w) > MAX_ASPECT * min(h, w):  # keep the resize small: cut far-off parts the final crop drops anyway
        keep_h, keep_w = min(h, int(MAX_ASPECT * w)), min(w, int(MAX_ASPECT * h))
        top, left = (h - keep_h) // 2, (w - keep_w) // 2
        x = x[:, :, top : top + keep_h, left : left + keep_w]
        h, w = keep_h, keep_w
    if (h, w) != (IMAGE_SIZE, IMAGE_SIZE):
        scale = IMAGE_SIZE / min(h, w)
        nh, nw = max(IMAGE_SIZE, round(h * scale)), max(IMAGE_SIZE, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        top, left = (nh - IMAGE_SIZE) // 2, (nw - IMAGE_SIZE) // 2
        x = x[:, :, top : top + IMAGE_SIZE, left : left + IMAGE_SIZE]
    return x * 2 - 1


@torch.inference_mode()
def encode_images(vq: JanusVQ, images: torch.Tensor, budget_bytes: int | None = None) -> JanusTokens:
    """IMAGE [B, H, W, 3] -> JANUS_TOKENS [B, 24, 24] (nearest L2-normalised codebook entry, as the original)."""
    if vq.model.encoder is None:
        raise PayloadError("this VQ was loaded without its encoder; load it with the encoder to encode images.",
                           input="vq")
    pixels = to_model_pixels(images)
    n = chunk_size(vq, pixels.shape[0], budget_bytes)
    out = torch.empty((pixels.shape[0], GRID, GRID), dtype=torch.long)
    for start in range(0, pixels.shape[0], n):
        chunk = pixels[start : start + n].to(vq.device, vq.dtype)
        out[start : start + n] = vq.model.encode_pixels(chunk).cpu()
    return JanusTokens(tokens=out, seeds=[None] * out.shape[0], settings={"source": "vq_encode"},
                       model=vq.identity.as_dict())
