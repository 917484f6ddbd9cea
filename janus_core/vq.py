"""VQ decode (tokens -> IMAGE) and encode (IMAGE -> tokens), in memory-bounded chunks.

Images are the editor's layout: float32 [B, H, W, 3] in 0..1 on the CPU.
Encode policy for non-384 inputs (the Janus-Pro training recipe): resize the short side to 384
(bicubic, antialiased), then centre-crop the long side to 384.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import PayloadError
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
        raise PayloadError(f"{what} must be JANUS_TOKENS, got {type(tokens).__name__}.")
    if t.dim() == 2 and t.shape[1] == GRID * GRID:
        t = t.view(-1, GRID, GRID)
    if t.dim() != 3 or tuple(t.shape[1:]) != (GRID, GRID):
        raise PayloadError(f"{what} have shape {tuple(t.shape)}; expected [B, {GRID}, {GRID}] (384x384 images).")
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise PayloadError(f"{what} must be integer codebook indices, got {t.dtype}.")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= codebook_size):
        raise PayloadError(f"{what} hold indices outside the codebook 0..{codebook_size - 1} "
                           f"(min {int(t.min())}, max {int(t.max())}): they come from another model or file.")
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


def to_model_pixels(images: torch.Tensor) -> torch.Tensor:
    """[B, H, W, 3] in 0..1 -> [B, 3, 384, 384] in -1..1 (short side to 384, centre crop)."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[-1] not in (3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise PayloadError(f"image must be [B, H, W, 3] floats in 0..1, got {shape}.")
    x = images[..., :3].float().permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
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
        raise PayloadError("this VQ was loaded without its encoder; load it with the encoder to encode images.")
    pixels = to_model_pixels(images)
    n = chunk_size(vq, pixels.shape[0], budget_bytes)
    out = torch.empty((pixels.shape[0], GRID, GRID), dtype=torch.long)
    for start in range(0, pixels.shape[0], n):
        chunk = pixels[start : start + n].to(vq.device, vq.dtype)
        out[start : start + n] = vq.model.encode_pixels(chunk).cpu()
    return JanusTokens(tokens=out, seeds=[None] * out.shape[0], settings={"source": "vq_encode"},
                       model=vq.identity.as_dict())
