"""The Janus generation model: a compact Llama decoder, the image-token embedding / aligner / head,
and an explicit KV cache. The VQ-16 image tokenizer lives in `vq_model.py`.

In the style of gpt-fast: q/k/v and gate/up projections are fused into one matmul each (the loader
concatenates the checkpoint's separate tensors), the cache is allocated once and written in place,
and attention goes through `scaled_dot_product_attention`. Numerics follow transformers' Llama
(fp32 RMSNorm statistics, RoPE tables computed in fp32 and cast to the activation dtype).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import quantize as q
from .config import LMConfig
from .tuning import gemv_product


class Linear(nn.Module):
    """nn.Linear's layout (weight [out, in], as checkpoints store it), with a choice of CPU product per row count.

    A decode step multiplies 2 x batch rows by each weight. For so few rows some CPU BLAS builds (MKL on AMD)
    run `F.linear` on one thread and stream the weight once per row, where `(W @ x.T).T` reads it once over all
    threads; on other CPUs (Intel) `F.linear` is the faster one. `forms` ({rows: use the (W @ x.T).T form}) is
    filled by `tuning.prepare_forms` from a measurement on the running machine before a decode loop starts; any
    row count not in it (the prefill, other devices) uses `F.linear`. The forms round differently, so the
    compiled step reads the same `forms` as the eager one.

    Quantized storage (`set_quantized`, done by the loader while it reads each weight): int8 or int4 weight-only,
    multiplied by torch's own kernels (quantize.py says which, per device)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.quant = "none"  # storage mode: "none" (float weight), "int8" or "int4"; see set_quantized
        self.layout = None  # int4 only: "cpu", "cuda" or "plain" (quantize.py)
        self.group = None  # int4 only: input features per (scale, zero) pair
        self.forms: dict[int, bool] = {}  # rows -> the (W @ x.T).T product (tuning.prepare_forms); else F.linear

    def set_quantized(self, mode: str, weight: torch.Tensor) -> None:
        """Replace the float weight [out, in] by its weight-only quantized form, on the weight's device.

        int8: `weight` int8 [out, in] + `scales` [out]. int4: `weight` packed for the device's kernel + `scales`
        = scales_and_zeros [in / group, out, 2]. A layer whose shape torch's int4 kernels do not take
        (quantize.int4_fits) is stored int8, and one no int8 kernel takes safely everywhere (quantize.int8_fits)
        keeps its float weight. Both are parameters (no gradient), so `.to()`, state_dict and the
        editor's model manager see them like any weight."""
        if mode not in ("int8", "int4"):
            raise ValueError(f"unknown quantization {mode!r}")
        mode = q.storage_for(mode, self.out_features, self.in_features)
        if mode == "none":  # a shape no kernel takes safely everywhere: keep the float weight (it is tiny)
            self.weight = nn.Parameter(weight, requires_grad=False)
            self.layout = self.group = None
            return
        if mode == "int8":
            packed, scales = q.quantize_int8(weight)
            self.layout = self.group = None
        else:
            plain, scales = q.quantize_int4(weight, q.INT4_GROUP)
            packed, self.layout = q.int4_for_device(plain)
            self.group = q.INT4_GROUP
            del plain
        self.weight = nn.Parameter(packed, requires_grad=False)
        self.scales = nn.Parameter(scales, requires_grad=False)
        self.quant = mode

    def _apply(self, fn, recurse=True):
        """int4 weights are laid out per device: moving one re-lays it out for the new device's kernel."""
        if self.quant == "int4":
            target = fn(torch.empty(0, dtype=torch.uint8, device=self.weight.device)).device
            if target != self.weight.device:
                plain = q.int4_to_plain(self.weight.data, self.layout, self.in_features, self.group).to(target)
                packed, self.layout = q.int4_for_device(plain)
                self.weight = nn.Parameter(packed, requires_grad=False)
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if self.quant != "none":
            if self.quant == "int8":
                out = q.int8_product(flat, self.weight, self.scales)
            else:
                out = q.int4_product(flat, self.weight, self.scales, self.layout, self.group)
            if self.bias is not None:
                out = out + self.bias
        elif self.forms.get(flat.shape[0], False) and flat.device.type == "cpu":
            out = gemv_product(flat, self.weight)
            if self.bias is not None:
                out = out + self.bias
        else:
            out = F.linear(flat, self.weight, self.bias)
        return out.reshape(*x.shape[:-1], out.shape[-1])


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


def rope_tables(cfg: LMConfig, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin for integer `positions` (any shape) -> (..., head_dim), as transformers' Llama builds them."""
    hd = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64, device=positions.device).float() / hd))
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class KVCache:
    """Per-layer key/value buffers `[rows, kv_heads, max_len, head_dim]`, allocated once, written in place."""

    def __init__(self, cfg: LMConfig, rows: int, max_len: int, device, dtype):
        shape = (rows, cfg.num_kv_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_layers)]
        self.max_len = max_len

    def release(self) -> None:
        self.k.clear()
        self.v.clear()

    @staticmethod
    def nbytes(cfg: LMConfig, rows: int, max_len: int, dtype: torch.dtype) -> int:
        elem = torch.empty((), dtype=dtype).element_size()
        return 2 * cfg.num_layers * rows * cfg.num_kv_heads * max_len * cfg.head_dim * elem


class Attention(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.split = (q, kv, kv)
        self.wqkv = Linear(cfg.hidden_size, q + 2 * kv, bias=False)
        self.wo = Linear(q, cfg.hidden_size, bias=False)

    def forward(self, x, cos, sin, k_cache, v_cache, pos, mask):
        """x [R, T, H]; cos/sin [R, 1, T, hd]; pos: int start index (prefix attention) or a 0-d tensor
        (static-shape attention over the whole cache, for captured steps); mask: bool, True = attend, or "causal"
        for a whole sequence written from position 0 (SDPA's own causal kernel: training and teacher forcing)."""
        cfg = self.cfg
        rows, t, _ = x.shape
        q, k, v = self.wqkv(x).split(self.split, dim=-1)
        q = q.view(rows, t, cfg.num_heads, cfg.head_dim).transpose(1, 2)
        k = k.view(rows, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        v = v.view(rows, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if isinstance(pos, int):
            k_cache[:, :, pos : pos + t] = k
            v_cache[:, :, pos : pos + t] = v
            keys, values = k_cache[:, :, : pos + t], v_cache[:, :, : pos + t]
        else:  # tensor position [1]: fixed shapes, so the step can be captured as one graph
            k_cache.index_copy_(2, pos, k)
            v_cache.index_copy_(2, pos, v)
            keys, values = k_cache, v_cache
        if isinstance(mask, str):  # "causal": a whole sequence from position 0 (training, teacher forcing)
            out = F.scaled_dot_product_attention(q, keys, values, is_causal=True,
                                                 enable_gqa=cfg.num_kv_heads != cfg.num_heads)
        else:
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask,
                                                 enable_gqa=cfg.num_kv_heads != cfg.num_heads)
        return self.wo(out.transpose(1, 2).reshape(rows, t, -1))


class FeedForward(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.w13 = Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)  # gate | up
        self.w2 = Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x, cos, sin, k_cache, v_cache, pos, mask):
        x = x + self.attention(self.attention_norm(x), cos, sin, k_cache, v_cache, pos, mask)
        return x + self.feed_forward(self.ffn_norm(x))


class MLP2(nn.Module):
    """Linear -> exact GELU -> Linear (the original `MlpProjector` / `vision_head`)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int):
        super().__init__()
        self.fc1 = Linear(d_in, d_hidden)
        self.fc2 = Linear(d_hidden, d_out)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class HostEmbedding(nn.Embedding):
    """An embedding table that stays in host memory: `.to(device)`, `.cuda()`, `.half()` and the editor's model
    manager (which moves module by module) leave it where the loader put it, on the CPU. Only the rows a prompt
    asks for are gathered there and moved (`JanusGenerator.embed_text`)."""

    host_resident = True

    def _apply(self, fn, recurse=True):
        return self


def device_parameters(module: nn.Module):
    """The parameters that move with the model (everything but host-resident tables)."""
    for m in module.modules():
        if not getattr(m, "host_resident", False):
            yield from m.parameters(recurse=False)


class JanusGenerator(nn.Module):
    """Everything text-to-image sampling needs, and nothing else (no lm_head, no vision tower)."""

    def __init__(self, cfg: LMConfig, image_vocab: int, image_embed_dim: int):
        super().__init__()
        self.cfg = cfg
        self.image_vocab = image_vocab
        self.embed_tokens = HostEmbedding(cfg.vocab_size, cfg.hidden_size)  # on the CPU, wherever the model runs
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.gen_embed = nn.Embedding(image_vocab, image_embed_dim)
        self.gen_aligner = MLP2(image_embed_dim, cfg.hidden_size, cfg.hidden_size)
        self.gen_head = MLP2(cfg.hidden_size, cfg.hidden_size, image_vocab)

    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Text-token embeddings [R, T, H] for prompt ids, on the device the decoder runs on: the rows are
        gathered from the host-resident table and only they are moved."""
        ref = self.norm.weight
        return self.embed_tokens(ids.to(self.embed_tokens.weight.device)).to(device=ref.device, dtype=ref.dtype)

    def image_token_embeds(self, tokens: torch.Tensor) -> torch.Tensor:
        """aligner(gen_embed(ids)): the LLM input for an image token."""
        return self.gen_aligner(self.gen_embed(tokens))

    def forward_hidden(self, x, cos, sin, cache: KVCache, pos, mask) -> torch.Tensor:
        """Run the decoder over input embeddings x [R, T, H], filling the cache; returns final-norm hidden states."""
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache.k[i], cache.v[i], pos, mask)
        return self.norm(x)

    def image_logits(self, hidden_last: torch.Tensor) -> torch.Tensor:
        """Generation-head logits [R, image_vocab] for the last hidden state of each row."""
        return self.gen_head(hidden_last)
