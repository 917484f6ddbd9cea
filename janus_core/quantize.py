"""Weight-only int8 / int4 quantization of `model.Linear` weights, and the products that use them.

The storage lives in `model.Linear` itself (a quantized storage mode, gpt-fast style); this module holds the
math: turning a float weight into integers + scales (row block by row block, so quantizing one tensor needs
little more than that tensor), packing int4 for torch's own kernels, and the products.

- int8: symmetric, one scale per output channel: w ~ q * s, q in -127..127.
- int4: asymmetric, one (scale, zero) pair per group of INT4_GROUP input features (gpt-fast's scheme, the one
  torch's int4 kernels read): w ~ (q - 8) * s + z, q in 0..15.

Products, per device (activations are cast to the kernel's dtype and the result back, so the residual stream,
norms and attention keep the model's dtype):
- CPU: `aten._weight_int8pack_mm` / `aten._weight_int4pack_mm_for_cpu`, both with bfloat16 activations: on this
  project's CPU the int8 kernel is ~5x slower with float32 activations and the int4 kernel ~50x
  (`python benchmarks/bench_quant_linear.py`).
- CUDA: int8 as gpt-fast writes it, `F.linear(x, w.to(x.dtype)) * s` (compiled, the cast fuses into the product);
  int4 `aten._weight_int4pack_mm` with bfloat16 activations.
- Elsewhere (MPS, ...): int8 the same dequantizing form as CUDA; int4 is kept in the plain packed layout and
  dequantized per product (correct, slower).

int4 layouts: "plain" = two 4-bit values per byte, even column in the high nibble, [out, in / 2] (the input of
torch's CUDA packer); "cpu" = what `_convert_weight_to_int4pack_for_cpu` makes (depends on the CPU's instruction
set); "cuda" = the tiled int32 tensor of `_convert_weight_to_int4pack`. `Linear` re-lays its weight out when it
moves between devices (see `int4_to_plain` / `int4_for_device`).
"""

from __future__ import annotations

import functools
import threading

import torch
import torch.nn.functional as F

from .errors import JanusError, SettingError

QUANTIZE_CHOICES = ("none", "int8", "int4")
INT4_GROUP = 32  # input features per int4 (scale, zero) pair; see benchmarks/README.md "Choosing the int4 group size"
INT4_OUT_MULTIPLE = 64  # the CPU packer lays out blocks of 64 output features
INT8_IN_MULTIPLE = 16  # the CPU int8 kernel is only correct for such input widths (int8_fits)
KERNEL_DTYPE = torch.bfloat16  # activation dtype of every quantized kernel
BLOCK_ELEMENTS = 1 << 22  # weights quantized / packed at a time (16 MB of float32 temporaries), never a whole tensor


def _row_block(in_features: int) -> int:
    """Rows per block: a multiple of 64 (the CPU int4 packer's block), about BLOCK_ELEMENTS weights."""
    return max(INT4_OUT_MULTIPLE, BLOCK_ELEMENTS // in_features // INT4_OUT_MULTIPLE * INT4_OUT_MULTIPLE)


def check_quantize(value) -> str:
    """The boundary check of every `quantize=` argument."""
    if value in (None, ""):
        return "none"
    if value not in QUANTIZE_CHOICES:
        raise SettingError(f"quantize must be one of {', '.join(QUANTIZE_CHOICES)}; got {value!r}.", input="quantize")
    return value


def int4_fits(out_features: int, in_features: int, group: int = INT4_GROUP) -> bool:
    """Shapes torch's int4 kernels take: in_features a multiple of the group (and of 32, the smallest k tile),
    out_features a multiple of 64. A layer that does not fit is stored int8 instead (see `storage_for`)."""
    return in_features % group == 0 and in_features % 32 == 0 and out_features % INT4_OUT_MULTIPLE == 0


def int8_fits(out_features: int, in_features: int) -> bool:
    """Shapes on which torch's CPU int8 kernel is correct on every instruction set it dispatches to.

    `aten._weight_int8pack_mm` with bfloat16 activations (the fast path we feed it) reads the input 8 values at a
    time with AVX2 and 16 at a time with AVX-512, without a scalar tail: with in_features not a multiple of 16 it
    returns garbage for one row and crashes the process (SIGSEGV) from two rows on, on AVX-512 (Intel and AMD,
    torch 2.13 and 2.14); on AVX2 the same happens when in_features is not a multiple of 8. Measured by
    tests/test_quant_kernels.py, which runs every linear shape of the released models at 1, 2, 4 and 32 rows
    under every ATEN_CPU_CAPABILITY this machine can force (default, avx2, avx512), each in its own process.
    CUDA and MPS multiply int8 by dequantizing into F.linear (any shape). The layers this leaves out (in the
    released models only the generation aligner's first layer, 8 inputs wide) are a few kilobytes: quantizing
    them saves nothing."""
    return in_features % INT8_IN_MULTIPLE == 0


def storage_for(mode: str, out_features: int, in_features: int) -> str:
    """The storage a layer of this shape gets when `mode` is asked for: the mode itself where every device's kernel
    takes the shape, else the next one that does (int4 -> int8 -> none). Device-independent, so a model can move
    between devices (the editor offloads to the CPU) without re-deciding.

    int4 on CUDA (`_convert_weight_to_int4pack`: n % 8, k % (16 * inner k tiles), group 32..256) and on the CPU
    (`_convert_weight_to_int4pack_for_cpu`: n % 16, refused otherwise; correct at every capability level for
    k % 32, tested) both take what `int4_fits` admits."""
    if mode == "int4" and int4_fits(out_features, in_features, INT4_GROUP):
        return "int4"
    if mode in ("int4", "int8") and int8_fits(out_features, in_features):
        return "int8"
    return "none"


def _inner_k_tiles(in_features: int) -> int:
    return 8 if in_features % 128 == 0 else 4 if in_features % 64 == 0 else 2


# ---- quantizing ------------------------------------------------------------------------------------------


_WORK = threading.local()


def _work(numel: int, device) -> torch.Tensor:
    """One float32 scratch buffer per thread and device, reused by every block of every tensor: quantizing
    allocates no block-sized temporaries, whose freed heap pages would otherwise stay resident (fragmentation)."""
    bufs = getattr(_WORK, "bufs", None)
    if bufs is None:
        bufs = _WORK.bufs = {}
    # a buffer made under inference mode cannot be written outside it (and the editor loads either way)
    key = (str(torch.device(device)), torch.is_inference_mode_enabled())
    if key not in bufs or bufs[key].numel() < numel:
        bufs[key] = torch.empty(numel, dtype=torch.float32, device=device)
    return bufs[key][:numel]


@torch.no_grad()
def quantize_int8(w: torch.Tensor, scale_dtype=KERNEL_DTYPE) -> tuple[torch.Tensor, torch.Tensor]:
    """float [out, in] -> (int8 [out, in], scales [out]) with w ~ q * scales[:, None]."""
    n, k = w.shape
    out = torch.empty(w.shape, dtype=torch.int8, device=w.device)
    scales = torch.empty(n, dtype=torch.float32, device=w.device)
    rb = _row_block(k)
    for r0 in range(0, n, rb):
        rows = min(rb, n - r0)
        block = _work(rows * k, w.device).view(rows, k)
        block.copy_(w[r0 : r0 + rows])
        s = torch.linalg.vector_norm(block, ord=float("inf"), dim=1).clamp_(min=1e-12).div_(127.0)
        s = s.to(scale_dtype).float()  # quantize against the scale the kernel will use
        out[r0 : r0 + rows].copy_(block.div_(s[:, None]).round_().clamp_(-127, 127))
        scales[r0 : r0 + rows] = s
    return out, scales.to(scale_dtype)


@torch.no_grad()
def quantize_int4(w: torch.Tensor, group: int = INT4_GROUP,
                  scale_dtype=KERNEL_DTYPE) -> tuple[torch.Tensor, torch.Tensor]:
    """float [out, in] -> (plain packed uint8 [out, in / 2], scales_and_zeros [in / group, out, 2])."""
    n, k = w.shape
    plain = torch.empty((n, k // 2), dtype=torch.uint8, device=w.device)
    sz = torch.empty((k // group, n, 2), dtype=scale_dtype, device=w.device)
    rb = _row_block(k)
    for r0 in range(0, n, rb):
        rows = min(rb, n - r0)
        block = _work(rows * k, w.device).view(rows, k // group, group)
        block.copy_(w[r0 : r0 + rows].reshape(rows, k // group, group))
        lo, hi = block.amin(dim=-1), block.amax(dim=-1)
        scales = ((hi - lo).clamp_(min=1e-6) / 15).to(scale_dtype)
        zeros = (lo + scales.float() * 8).to(scale_dtype)
        base = zeros.float() - scales.float() * 8  # the kernel's lowest level, in the stored precision
        block.sub_(base[..., None]).div_(scales.float()[..., None]).round_().clamp_(0, 15)
        q = block.view(rows, k)
        plain[r0 : r0 + rows].copy_(q[:, ::2]).mul_(16).add_(q[:, 1::2].to(torch.uint8))
        sz[:, r0 : r0 + rows, 0] = scales.t()
        sz[:, r0 : r0 + rows, 1] = zeros.t()
    return plain, sz


def unpack_plain(plain: torch.Tensor) -> torch.Tensor:
    """plain packed uint8 [out, in / 2] -> uint8 values 0..15 [out, in]."""
    return torch.stack(((plain >> 4), (plain & 15)), dim=-1).reshape(plain.shape[0], -1)


def dequantize_int8(q: torch.Tensor, scales: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    return q.to(dtype) * scales.to(dtype)[:, None]


def dequantize_int4_plain(plain: torch.Tensor, sz: torch.Tensor, group: int, dtype=torch.float32) -> torch.Tensor:
    q = unpack_plain(plain).to(dtype)
    n, k = q.shape
    scales = sz[..., 0].t().to(dtype).repeat_interleave(group, dim=1)
    zeros = sz[..., 1].t().to(dtype).repeat_interleave(group, dim=1)
    return (q - 8) * scales + zeros


# ---- int4 layouts ----------------------------------------------------------------------------------------


def int4_for_device(plain: torch.Tensor) -> tuple[torch.Tensor, str]:
    """The plain packed weight laid out for the int4 kernel of its device: (tensor, layout name)."""
    if plain.device.type == "cpu":
        k = plain.shape[1] * 2
        _cpu_layout_slots(k)  # checks the layout packs blocks of 64 rows independently: then pack a block at a time
        out = torch.empty_like(plain)
        rb = _row_block(k)
        for r0 in range(0, plain.shape[0], rb):
            rows = min(rb, plain.shape[0] - r0)
            q = _work(rows * k, "cpu").view(torch.int32).view(rows, k // 2, 2)  # the scratch buffer, as int32
            src = plain[r0 : r0 + rows]
            q[..., 0].copy_(src >> 4)
            q[..., 1].copy_(src & 15)
            out[r0 : r0 + rows] = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.view(rows, k),
                                                                                      _inner_k_tiles(k))
        return out, "cpu"
    if plain.device.type == "cuda":
        return torch.ops.aten._convert_weight_to_int4pack(plain.contiguous(), _inner_k_tiles(plain.shape[1] * 2)), "cuda"
    return plain, "plain"  # no int4 kernel here: dequantized per product


@functools.lru_cache(maxsize=16)
def _cpu_layout_slots(k: int) -> torch.Tensor:
    """For the CPU packer's layout: which (row, column) of a block of 64 rows each packed nibble holds.

    Derived from the packer itself (a weight whose values spell their own index, 4 bits at a time), so it
    follows whatever layout this CPU's build uses; checked on a random weight before it is trusted."""
    rows = INT4_OUT_MULTIPLE
    idx = torch.arange(rows * k, dtype=torch.int64).reshape(rows, k)
    slots = torch.zeros(rows * k, dtype=torch.int64)
    digits = max(1, ((rows * k - 1).bit_length() + 3) // 4)
    for d in range(digits):
        probe = ((idx >> (4 * d)) & 15).to(torch.int32)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(probe, _inner_k_tiles(k)).reshape(-1)
        nibbles = torch.stack((packed & 15, packed >> 4), dim=-1).reshape(-1).to(torch.int64)
        slots |= nibbles << (4 * d)
    check = torch.randint(0, 16, (2 * rows, k), dtype=torch.int32)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(check, _inner_k_tiles(k))
    if not torch.equal(_cpu_unpack(packed, slots, k), check.to(torch.uint8)):
        raise JanusError("this torch build's CPU int4 layout is not the expected blocks of 64 rows, so int4 weights "
                         "cannot be moved off the CPU; load the model with device= set to where it runs.")
    return slots


def _cpu_unpack(packed: torch.Tensor, slots: torch.Tensor, k: int) -> torch.Tensor:
    n = packed.shape[0]
    blocks = packed.reshape(n // INT4_OUT_MULTIPLE, -1)
    nibbles = torch.stack((blocks & 15, blocks >> 4), dim=-1).reshape(blocks.shape[0], -1)
    out = torch.empty_like(nibbles)
    out[:, slots] = nibbles
    return out.reshape(n, k)


def int4_to_plain(weight: torch.Tensor, layout: str, in_features: int, group: int) -> torch.Tensor:
    """Back to the plain packed layout (on the weight's device), exactly."""
    if layout == "plain":
        return weight
    if layout == "cpu":
        q = _cpu_unpack(weight, _cpu_layout_slots(in_features), in_features)
        return (q[:, ::2] << 4) | q[:, 1::2]
    # cuda: the kernel itself reads the values back: identity rows times the weight, with unit scales and zero 8
    n = weight.shape[0] * 8
    unit = torch.empty((in_features // group, n, 2), dtype=KERNEL_DTYPE, device=weight.device)
    unit[..., 0], unit[..., 1] = 1, 8
    cols = []
    eye = torch.eye(in_features, dtype=KERNEL_DTYPE, device=weight.device)
    for c0 in range(0, in_features, 1024):
        cols.append(torch.ops.aten._weight_int4pack_mm(eye[c0 : c0 + 1024], weight, group, unit).round().to(torch.uint8))
    q = torch.cat(cols).t()
    return (q[:, ::2] << 4) | q[:, 1::2]


# ---- products --------------------------------------------------------------------------------------------


def int8_product(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x [rows, in] @ dequant(weight).T, in x's dtype. The CPU kernel only ever sees shapes it is correct on."""
    if x.device.type == "cpu" and int8_fits(weight.shape[0], weight.shape[1]):
        return torch.ops.aten._weight_int8pack_mm(x.to(KERNEL_DTYPE).contiguous(), weight, scales.to(KERNEL_DTYPE)).to(x.dtype)
    return int8_dequant_product(x, weight, scales)


def int8_dequant_product(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """gpt-fast's form: the compiler fuses the int8 -> x.dtype cast into the product (CUDA, MPS, ...)."""
    return F.linear(x, weight.to(x.dtype)) * scales.to(x.dtype)


def int4_product(x: torch.Tensor, weight: torch.Tensor, sz: torch.Tensor, layout: str, group: int) -> torch.Tensor:
    if layout == "cpu":
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(KERNEL_DTYPE).contiguous(), weight, group,
                                                          sz.to(KERNEL_DTYPE)).to(x.dtype)
    if layout == "cuda":
        return torch.ops.aten._weight_int4pack_mm(x.to(KERNEL_DTYPE).contiguous(), weight, group, sz.to(KERNEL_DTYPE)).to(x.dtype)
    return F.linear(x, dequantize_int4_plain(weight, sz, group, x.dtype))
