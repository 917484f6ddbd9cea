"""The understanding encoder: the SigLIP ViT tower and the `aligner` MLP that maps its patch features to LLM inputs.

What runs is what the official `CLIPVisionTower` runs for `siglip_large_patch16_384` (reference/janus-architecture.md
§7): patch conv -> + position table (no class token) -> pre-LN blocks (fused q|k|v, exact-erf GELU MLP) ->
the final LayerNorm -> all patch tokens. `select_layer = -1` keeps every block, and `ignore_head = True` means
the attention-pool head (`attn_pool.*`, stored in the checkpoints) never runs, so it is not loaded.
The aligner is Linear -> (GELU -> Linear) x (depth - 1), as the original `MlpProjector("mlp_gelu")`.
Every dimension comes from the tensor shapes, so the tiny test tower loads with the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .model import Linear


@dataclass(frozen=True)
class VisionConfig:
    width: int
    depth: int  # blocks that run (the checkpoint may hold more only when select_layer says to skip them)
    heads: int
    patch: int
    num_positions: int  # patch tokens per image (576 for 384 px / 16)
    mlp_hidden: int
    layer_norm_eps: float
    pos_shape: tuple  # the position table's shape in the checkpoint: [1, N, D] (original) or [N, D] (transformers)
    aligner_dims: tuple  # (in, hidden, ..., out) of the aligner's linears

    @property
    def grid(self) -> int:
        return int(round(self.num_positions ** 0.5))

    @property
    def image_size(self) -> int:
        return self.grid * self.patch


class VisionAttention(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = Linear(cfg.width, 3 * cfg.width)
        self.proj = Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # bidirectional, scale 1/sqrt(head_dim)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class VisionMLP(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.fc1 = Linear(cfg.width, cfg.mlp_hidden)
        self.fc2 = Linear(cfg.mlp_hidden, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class VisionBlock(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.attn = VisionAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.mlp = VisionMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTower(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch, stride=cfg.patch)
        self.pos_embed = nn.Parameter(torch.empty(cfg.pos_shape))
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, S, S] (normalised) -> patch features [B, N, D] after the final norm."""
        x = self.patch_embed(pixels.to(self.patch_embed.weight.dtype)).flatten(2).transpose(1, 2)
        x = x + self.pos_embed.reshape(1, -1, self.cfg.width)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class Aligner(nn.Module):
    def __init__(self, dims: tuple):
        super().__init__()
        self.fcs = nn.ModuleList(Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fcs[0](x)
        for fc in self.fcs[1:]:
            x = fc(F.gelu(x))
        return x


class UnderstandingModel(nn.Module):
    """Everything image understanding adds to the generation model: tower, aligner and the text head."""

    def __init__(self, cfg: VisionConfig, hidden_size: int, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.vision = VisionTower(cfg)
        self.aligner = Aligner(cfg.aligner_dims)
        self.lm_head = Linear(hidden_size, vocab_size, bias=False)  # untied from the embedding table

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> LLM input embeddings for the image positions [B, N, H]."""
        return self.aligner(self.vision(pixels))

    def text_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)


@dataclass(frozen=True)
class ImagePreprocess:
    """The processor settings of `preprocessor_config.json` (defaults: the file every released Janus-Pro ships)."""

    image_size: int = 384
    min_size: int = 14
    image_mean: tuple = (0.5, 0.5, 0.5)
    image_std: tuple = (0.5, 0.5, 0.5)
    rescale_factor: float = 1.0 / 255.0
    do_normalize: bool = True

    @property
    def background(self) -> tuple:
        """The padding colour: the official processor derives it from the mean (0.5 -> 127), as transformers does."""
        return tuple(int(m * 255) for m in self.image_mean)


@dataclass(eq=False)
class JanusUnderstanding:
    """The understanding parts of one checkpoint, loaded on first use next to a JanusLM (same dtype and device)."""

    model: UnderstandingModel
    preprocess: ImagePreprocess
    identity: object  # ModelIdentity of the checkpoint
    device: torch.device
    dtype: torch.dtype
