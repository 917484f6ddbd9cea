"""The demo model's dimensions, and the project's own modules built at those dimensions for training.

The demo checkpoint is Janus-Pro's architecture in the transformers layout (`model_type: janus`) at small sizes,
so `janus_core` loads it like any checkpoint and transformers' `JanusForConditionalGeneration` loads it too. The
training code trains janus_core's own modules (`vq_model.VQModel`, `model.JanusGenerator`, `vision.*`), so the
math that is trained is the math that runs; `export.py` writes them under the transformers names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class VQArch:
    base_channels: int = 32
    channel_multiplier: tuple = (1, 1, 2, 2, 4)  # 5 levels: 16x down / upsampling, a 24 x 24 grid at 384 px
    num_res_blocks: int = 1
    latent_channels: int = 64
    embed_dim: int = 8  # the code vectors' width, as in Janus
    num_embeddings: int = 1024  # codebook size

    def as_dict(self) -> dict:
        return asdict(self)


def vq_shapes(a: VQArch, with_encoder: bool = True) -> dict[str, tuple]:
    """Tensor shapes of the VQ in janus_core's (original) names, as the transformers VQ of `a` has them: the encoder
    holds attention in its last level, the decoder in its first, and each decoder level has one residual block more
    than the encoder's."""
    shapes: dict[str, tuple] = {}

    def conv(name, c_in, c_out, k):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (c_out, c_in, k, k), (c_out,)

    def norm(name, c):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (c,), (c,)

    def res(name, c_in, c_out):
        norm(f"{name}.norm1", c_in)
        conv(f"{name}.conv1", c_in, c_out, 3)
        norm(f"{name}.norm2", c_out)
        conv(f"{name}.conv2", c_out, c_out, 3)
        if c_in != c_out:
            conv(f"{name}.nin_shortcut", c_in, c_out, 1)

    def attn(name, c):
        norm(f"{name}.norm", c)
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{part}", c, c, 1)

    def mid(prefix, c):
        res(f"{prefix}mid.0", c, c)
        attn(f"{prefix}mid.1", c)
        res(f"{prefix}mid.2", c, c)

    base, mult, levels = a.base_channels, a.channel_multiplier, len(a.channel_multiplier)
    shapes["quantize.embedding.weight"] = (a.num_embeddings, a.embed_dim)
    conv("post_quant_conv", a.embed_dim, a.latent_channels, 1)
    # decoder: conv_in at the lowest resolution, mid, then levels from the lowest resolution up
    c = base * mult[-1]
    conv("decoder.conv_in", a.latent_channels, c, 3)
    mid("decoder.", c)
    for i, level in enumerate(reversed(range(levels))):
        out = base * mult[level]
        for j in range(a.num_res_blocks + 1):
            res(f"decoder.conv_blocks.{i}.res.{j}", c, out)
            c = out
            if i == 0:
                attn(f"decoder.conv_blocks.{i}.attn.{j}", c)
        if level != 0:
            conv(f"decoder.conv_blocks.{i}.upsample.conv", c, c, 3)
    norm("decoder.norm_out", c)
    conv("decoder.conv_out", c, 3, 3)
    if with_encoder:
        conv("encoder.conv_in", 3, base, 3)
        c = base
        for level in range(levels):
            out = base * mult[level]
            for j in range(a.num_res_blocks):
                res(f"encoder.conv_blocks.{level}.res.{j}", c, out)
                c = out
                if level == levels - 1:
                    attn(f"encoder.conv_blocks.{level}.attn.{j}", c)
            if level != levels - 1:
                conv(f"encoder.conv_blocks.{level}.downsample.conv", c, c, 3)
        mid("encoder.", c)
        norm("encoder.norm_out", c)
        conv("encoder.conv_out", c, a.latent_channels, 3)
        conv("quant_conv", a.latent_channels, a.embed_dim, 1)
    return shapes


def build_vq(a: VQArch, with_encoder: bool = True):
    """janus_core's VQModel at these dimensions, initialised to train fast: PyTorch's default init, with the last
    conv of every residual branch (and every attention output) zeroed, so each block starts as the identity and
    the stack trains like a shallow net first (the trick diffusion U-Nets use)."""
    from janus_core.vq_model import AttnBlock, ResnetBlock, VQModel

    vq = VQModel(vq_shapes(a, with_encoder), with_encoder=with_encoder)
    with torch.no_grad():
        for m in vq.modules():
            last = m.conv2 if isinstance(m, ResnetBlock) else m.proj_out if isinstance(m, AttnBlock) else None
            if last is not None:
                last.weight.zero_()
                last.bias.zero_()
    return vq


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class LMArch:
    hidden_size: int = 256
    num_layers: int = 6
    num_heads: int = 4
    num_kv_heads: int = 4
    intermediate_size: int = 704
    vocab_size: int = 512  # the demo tokenizer's (text/tokenizer VOCAB_SIZE)
    max_position_embeddings: int = 1024
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6

    def as_dict(self) -> dict:
        return asdict(self)

    def lm_config(self):
        from janus_core.config import LMConfig

        return LMConfig(vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                        intermediate_size=self.intermediate_size, num_layers=self.num_layers,
                        num_heads=self.num_heads, num_kv_heads=self.num_kv_heads,
                        head_dim=self.hidden_size // self.num_heads, rms_norm_eps=self.rms_norm_eps,
                        rope_theta=self.rope_theta, max_position_embeddings=self.max_position_embeddings)


@dataclass(frozen=True)
class VisionArch:
    """A SigLIP-style tower, narrow, with 32 px patches: 384 px -> a 12 x 12 grid of 144 image positions."""

    width: int = 128
    depth: int = 2
    heads: int = 2
    patch: int = 32
    mlp_hidden: int = 512
    aligner_depth: int = 2  # Linear -> GELU -> Linear, as Janus's mlp_gelu projector

    def as_dict(self) -> dict:
        return asdict(self)

    def vision_config(self, hidden: int):
        from janus_core.vision import VisionConfig

        grid = 384 // self.patch
        return VisionConfig(width=self.width, depth=self.depth, heads=self.heads, patch=self.patch,
                            num_positions=grid * grid, mlp_hidden=self.mlp_hidden, layer_norm_eps=1e-6,
                            pos_shape=(grid * grid, self.width),
                            aligner_dims=(self.width,) + (hidden,) * self.aligner_depth)


def _init_weights(module: torch.nn.Module, std: float = 0.02) -> None:
    """Llama-style: linears and embeddings N(0, 0.02), biases 0 (norms keep their ones)."""
    from janus_core.model import Linear

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (Linear, torch.nn.Linear)):
                m.weight.normal_(0.0, std)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, torch.nn.Embedding):
                m.weight.normal_(0.0, std)


def build_lm(a: LMArch, image_vocab: int, image_embed_dim: int):
    """janus_core's JanusGenerator (Llama body, text table, image embedding / aligner / head), initialised."""
    from janus_core.model import JanusGenerator

    model = JanusGenerator(a.lm_config(), image_vocab, image_embed_dim)
    _init_weights(model)
    return model


def build_understanding(v: VisionArch, a: LMArch):
    """janus_core's UnderstandingModel (tower, aligner, text head), initialised."""
    from janus_core.vision import UnderstandingModel

    model = UnderstandingModel(v.vision_config(a.hidden_size), a.hidden_size, a.vocab_size)
    _init_weights(model)
    with torch.no_grad():
        model.vision.pos_embed.normal_(0.0, 0.02)
    return model
