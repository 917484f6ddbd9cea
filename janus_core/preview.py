"""Cheap previews of image tokens without running the VQ decoder.

The palette is a linear map from a token's (L2-normalised) codebook vector to RGB, fitted once per
model: decode a few images of random tokens, average each decoded 16x16 patch to one colour, and
solve least squares `rgb ~ [code, 1] @ W`. A preview is then `palette[tokens]`: one gather per call,
no model work, so it costs nothing measurable next to a sampling step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .payloads import GRID, JanusVQ


@torch.inference_mode()
def fit_token_palette(vq: JanusVQ, n_images: int = 2, seed: int = 0) -> torch.Tensor:
    """uint8 [codebook_size, 3]: the preview colour of every token."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vq.codebook_size, (n_images, GRID, GRID), generator=gen)
    px = vq.model.decode_tokens(tokens.to(vq.device)).float().cpu()  # [n, 3, 384, 384] in ~[-1, 1]
    rgb = F.adaptive_avg_pool2d((px + 1) / 2, GRID).permute(0, 2, 3, 1).reshape(-1, 3)  # one colour per token
    codes = vq.model.codebook().float().cpu()
    x = torch.cat([codes[tokens.reshape(-1)], torch.ones(rgb.shape[0], 1)], dim=1)
    w = torch.linalg.lstsq(x, rgb).solution  # [d + 1, 3]
    full = torch.cat([codes, torch.ones(codes.shape[0], 1)], dim=1) @ w
    return (full.clamp(0, 1) * 255).round().to(torch.uint8)


def id_palette(codebook_size: int) -> torch.Tensor:
    """uint8 [codebook_size, 3]: a fixed pseudo-random colour per token id (for colouring by id)."""
    ids = torch.arange(codebook_size, dtype=torch.int64)
    mixed = (ids * 2654435761) % (2**32)
    return torch.stack([(mixed >> s) & 255 for s in (0, 8, 16)], dim=1).to(torch.uint8)


def token_preview(palette: torch.Tensor, tokens: torch.Tensor, upscale: int = 16) -> torch.Tensor:
    """tokens [B, n] (n <= 576, raster order; the rest not yet sampled) -> uint8 [B, 24*s, 24*s, 3].
    Positions not yet sampled are grey."""
    tokens = tokens.reshape(tokens.shape[0], -1).cpu()
    b, n = tokens.shape
    grid = torch.full((b, GRID * GRID, 3), 96, dtype=torch.uint8)
    grid[:, :n] = palette[tokens.clamp(0, palette.shape[0] - 1)]
    grid = grid.view(b, GRID, GRID, 3)
    if upscale > 1:
        grid = grid.repeat_interleave(upscale, dim=1).repeat_interleave(upscale, dim=2)
    return grid
