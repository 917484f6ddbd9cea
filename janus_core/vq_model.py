"""The VQ-16 image tokenizer (LlamaGen's VQ model, as used by Janus), built from tensor shapes.

The reference ignores its own VQ config and uses fixed defaults, so the structure here (levels,
channels, residual blocks per level, attention levels) is read off the checkpoint's tensor shapes.
Parameter names follow the original layout (`conv_blocks.{l}.res.{j}`, `mid.{0,1,2}`); the loader maps
the transformers names onto them. Unlike the reference, the upsampler keeps its input dtype
(the reference's hard-coded bf16 cast breaks fp16/CPU runs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention over all H*W positions."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, h, w = x.shape
        hn = self.norm(x)
        q, k, v = (m(hn).reshape(b, c, h * w).transpose(1, 2) for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


@dataclass(frozen=True)
class LevelSpec:
    res_channels: tuple[tuple[int, int], ...]  # (in, out) per residual block
    attn: int  # number of attention blocks (0 or len(res_channels))
    resample: bool  # has up- or downsample conv


class Level(nn.Module):
    def __init__(self, spec: LevelSpec, resample_cls):
        super().__init__()
        self.res = nn.ModuleList(ResnetBlock(i, o) for i, o in spec.res_channels)
        self.attn = nn.ModuleList(AttnBlock(spec.res_channels[-1][1]) for _ in range(spec.attn))
        name = "upsample" if resample_cls is Upsample else "downsample"
        setattr(self, name, resample_cls(spec.res_channels[-1][1]) if spec.resample else None)
        self._resample_name = name

    def forward(self, x):
        for j, res in enumerate(self.res):
            x = res(x)
            if len(self.attn):
                x = self.attn[j](x)
        resample = getattr(self, self._resample_name)
        return resample(x) if resample is not None else x


class Mid(nn.Sequential):
    def __init__(self, c: int):
        super().__init__(ResnetBlock(c, c), AttnBlock(c), ResnetBlock(c, c))


class Coder(nn.Module):
    """Shared shape of encoder and decoder: conv_in, levels, mid, norm_out, conv_out."""

    def __init__(self, conv_in: tuple[int, int], levels: list[LevelSpec], mid: int, conv_out: tuple[int, int], decoder: bool):
        super().__init__()
        self.decoder = decoder
        self.conv_in = nn.Conv2d(conv_in[0], conv_in[1], 3, padding=1)
        self.conv_blocks = nn.ModuleList(Level(s, Upsample if decoder else Downsample) for s in levels)
        self.mid = Mid(mid)
        self.norm_out = _norm(conv_out[0])
        self.conv_out = nn.Conv2d(conv_out[0], conv_out[1], 3, padding=1)

    def forward(self, x):
        x = self.conv_in(x)
        if self.decoder:
            x = self.mid(x)
        for level in self.conv_blocks:
            x = level(x)
        if not self.decoder:
            x = self.mid(x)
        return self.conv_out(F.silu(self.norm_out(x)))


def _coder_stages(coder: Coder) -> list[tuple[str, int, int]]:
    """(name, channels in, channels out) of each stage, in the order Coder.forward runs them."""
    mid = [("mid", coder.mid[0].conv1.in_channels, coder.mid[2].conv2.out_channels)]
    levels = []
    for i, level in enumerate(coder.conv_blocks):
        for j, res in enumerate(level.res):
            levels.append((f"conv_blocks.{i}.res.{j}", res.conv1.in_channels, res.conv2.out_channels))
        resample = getattr(level, level._resample_name)
        if resample is not None:
            levels.append((f"conv_blocks.{i}.{level._resample_name}", resample.conv.in_channels,
                           resample.conv.out_channels))
    body = mid + levels if coder.decoder else levels + mid
    return [("conv_in", coder.conv_in.in_channels, coder.conv_in.out_channels), *body,
            ("conv_out", coder.norm_out.num_channels, coder.conv_out.out_channels)]


def _coder_from_shapes(shapes: dict[str, tuple], prefix: str, decoder: bool) -> Coder:
    levels = sorted({int(m.group(1)) for k in shapes if (m := re.match(re.escape(prefix) + r"conv_blocks\.(\d+)\.", k))})
    specs = []
    for lv in levels:
        p = f"{prefix}conv_blocks.{lv}."
        n_res = len({int(m.group(1)) for k in shapes if (m := re.match(re.escape(p) + r"res\.(\d+)\.", k))})
        n_attn = len({int(m.group(1)) for k in shapes if (m := re.match(re.escape(p) + r"attn\.(\d+)\.", k))})
        chans = tuple((shapes[f"{p}res.{j}.conv1.weight"][1], shapes[f"{p}res.{j}.conv1.weight"][0]) for j in range(n_res))
        resample = f"{p}{'upsample' if decoder else 'downsample'}.conv.weight" in shapes
        specs.append(LevelSpec(chans, n_attn, resample))
    cin = shapes[f"{prefix}conv_in.weight"]
    cout = shapes[f"{prefix}conv_out.weight"]
    mid = shapes[f"{prefix}mid.0.conv1.weight"][0]
    return Coder((cin[1], cin[0]), specs, mid, (cout[1], cout[0]), decoder)


class VQModel(nn.Module):
    """VQ-16: decoder (tokens -> pixels) and, when loaded, encoder (pixels -> tokens)."""

    def __init__(self, shapes: dict[str, tuple], with_encoder: bool):
        super().__init__()
        k, d = shapes["quantize.embedding.weight"]
        self.codebook_size, self.code_dim = k, d
        self.quantize = nn.Module()
        self.quantize.embedding = nn.Embedding(k, d)
        self.post_quant_conv = nn.Conv2d(d, shapes["post_quant_conv.weight"][0], 1)
        self.decoder = _coder_from_shapes(shapes, "decoder.", decoder=True)
        self.downsample_factor = 2 ** sum(lv.upsample is not None for lv in self.decoder.conv_blocks)
        if with_encoder:
            self.encoder = _coder_from_shapes(shapes, "encoder.", decoder=False)
            self.quant_conv = nn.Conv2d(shapes["quant_conv.weight"][1], d, 1)
        else:
            self.encoder = self.quant_conv = None

    def shape_errors(self) -> list[str]:
        """Where consecutive tensors disagree on channel counts (each tensor alone can look right): a checkpoint
        assembled from different models would otherwise fail deep inside a forward pass."""
        errors = []

        def chain(prefix: str, stages, c_in: int, c_out: int):
            c = c_in
            for name, a, b in stages:
                if a != c:
                    errors.append(f"{prefix}{name} takes {a} channels but receives {c}")
                c = b
            if c != c_out:
                errors.append(f"{prefix} ends with {c} channels, expected {c_out}")

        chain("decoder.", [("post_quant_conv", self.post_quant_conv.in_channels, self.post_quant_conv.out_channels),
                           *_coder_stages(self.decoder)], self.code_dim, 3)
        if self.downsample_factor != 16:
            errors.append(f"decoder upsamples by {self.downsample_factor}, expected 16 (24x24 tokens -> 384 px)")
        if self.encoder is not None:
            chain("encoder.", [*_coder_stages(self.encoder),
                               ("quant_conv", self.quant_conv.in_channels, self.quant_conv.out_channels)], 3,
                  self.code_dim)
        groups = [m for m in self.modules() if isinstance(m, nn.GroupNorm) and m.num_channels % m.num_groups]
        errors += [f"a GroupNorm over {m.num_channels} channels (not a multiple of 32)" for m in groups[:1]]
        return errors

    def codebook(self) -> torch.Tensor:
        return F.normalize(self.quantize.embedding.weight, p=2, dim=-1)

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, h, w] (int) -> pixels [B, 3, 16h, 16w], nominally in [-1, 1]."""
        z = self.codebook()[tokens].permute(0, 3, 1, 2)
        return self.decoder(self.post_quant_conv(z))

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, H, W] in [-1, 1] -> tokens [B, H/16, W/16]: nearest L2-normalised code (as the original)."""
        if self.encoder is None:
            raise RuntimeError("VQ encoder not loaded; load the VQ with with_encoder=True.")
        z = self.quant_conv(self.encoder(pixels))  # [B, d, h, w]
        z = F.normalize(z.permute(0, 2, 3, 1), p=2, dim=-1)
        cb = self.codebook()
        # |z|^2 + |e|^2 - 2 z.e with unit vectors -> argmax of z.e
        return torch.argmax(z @ cb.t(), dim=-1)
