"""Run the quantized products of every linear shape of the released Janus models and compare each with the float
product of the dequantized weight. Meant to run in a process of its own (a native kernel may crash it):

    ATEN_CPU_CAPABILITY=avx2 python tests/quant_kernel_check.py int8 [--rows 1,2,4,32]

Prints `START <case>` before each product and `OK <case> <relative error>` / `BAD <case> <why>` after it, flushed,
so whoever reads the output knows which shape a crash happened on. Exit 0 either way (the reader judges).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from janus_core import quantize as q  # noqa: E402
from janus_core.model import Linear  # noqa: E402

# (out, in) of every Linear the quantize option touches, as janus_core stores them (q|k|v and gate|up fused),
# from each checkpoint's config.json: Janus-1.3B and Janus-Pro-1B (hidden 2048, intermediate 5632, vocab 102400)
# share one set; Janus-Pro-7B has hidden 4096, intermediate 11008. The generation aligner reads the VQ's 8-dim
# codes; the head writes the 16384 image tokens; lm_head (text logits) is quantized for image understanding.
RELEASED_SHAPES = {
    "Janus-1.3B / Janus-Pro-1B": [(6144, 2048), (2048, 2048), (11264, 2048), (2048, 5632), (2048, 8),
                                  (16384, 2048), (102400, 2048)],
    "Janus-Pro-7B": [(12288, 4096), (4096, 4096), (22016, 4096), (4096, 11008), (4096, 8), (16384, 4096),
                     (102400, 4096)],
}
ROWS = (1, 2, 4, 32)  # a describe step, CFG at batch 1, batch 2, batch 16
TOLERANCE = 0.02  # relative to the largest output: bfloat16 activations


def distinct_shapes() -> list[tuple[int, int]]:
    return sorted({s for shapes in RELEASED_SHAPES.values() for s in shapes})


def quantized_linear(mode: str, out_features: int, in_features: int, seed: int = 0) -> Linear:
    """A Linear of this shape in the storage the loader gives it (quantize.storage_for), holding random integer
    weights laid out by the loader's own packing (int4_for_device); no float weight is ever made (a 102400 x 4096
    one is 1.6 GB)."""
    gen = torch.Generator().manual_seed(seed)
    lin = Linear(in_features, out_features, bias=False)
    storage = q.storage_for(mode, out_features, in_features)
    if storage == "none":
        lin.set_quantized(mode, torch.randn(out_features, in_features, generator=gen).to(torch.bfloat16))
        return lin
    scale = 1.0 / in_features**0.5
    if storage == "int8":
        lin.weight = torch.nn.Parameter(torch.randint(-127, 128, (out_features, in_features), dtype=torch.int8,
                                                      generator=gen), requires_grad=False)
        lin.scales = torch.nn.Parameter((torch.rand(out_features, generator=gen) * scale / 64).to(q.KERNEL_DTYPE),
                                        requires_grad=False)
    else:
        plain = torch.randint(0, 256, (out_features, in_features // 2), dtype=torch.uint8, generator=gen)
        packed, lin.layout = q.int4_for_device(plain)
        lin.weight = torch.nn.Parameter(packed, requires_grad=False)
        lin.group = q.INT4_GROUP
        sz = torch.empty(in_features // q.INT4_GROUP, out_features, 2)
        sz[..., 0] = torch.rand(sz.shape[:2], generator=gen) * scale / 4
        sz[..., 1] = torch.randn(sz.shape[:2], generator=gen) * scale / 4
        lin.scales = torch.nn.Parameter(sz.to(q.KERNEL_DTYPE), requires_grad=False)
        lin.plain = plain  # the reference reads it from here (the layout round trip is tested in test_quantize)
    lin.quant = storage
    return lin


def dequantized_product(lin: Linear, x: torch.Tensor) -> torch.Tensor:
    """The float32 reference x @ dequant(W).T, block by block of output features."""
    if lin.quant == "none":
        return F.linear(x.float(), lin.weight.float())
    out = torch.empty(x.shape[0], lin.out_features)
    for r0 in range(0, lin.out_features, 2048):
        r1 = min(lin.out_features, r0 + 2048)
        if lin.quant == "int8":
            w = lin.weight[r0:r1].float() * lin.scales[r0:r1].float()[:, None]
        else:  # w = (q - 8) * scale + zero per group of INT4_GROUP inputs (q: high nibble = even column)
            plain = lin.plain[r0:r1]
            codes = torch.stack((plain >> 4, plain & 15), dim=-1).view(r1 - r0, -1, lin.group).float()
            sz = lin.scales[:, r0:r1].float().transpose(0, 1)  # [rows, groups, 2]
            w = ((codes - 8) * sz[..., :1] + sz[..., 1:]).view(r1 - r0, lin.in_features)
        out[:, r0:r1] = F.linear(x.float(), w)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["int8", "int4"])
    p.add_argument("--rows", default=",".join(map(str, ROWS)))
    p.add_argument("--shapes", default="", help="OUTxIN,... (default: every released shape)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = [int(r) for r in args.rows.split(",")]
    shapes = [tuple(int(d) for d in s.split("x")) for s in args.shapes.split(",")] if args.shapes else distinct_shapes()
    print(f"CAPABILITY {torch.backends.cpu.get_cpu_capability()}", flush=True)
    for out_f, in_f in shapes:
        lin = quantized_linear(args.mode, out_f, in_f)
        print(f"STORAGE {out_f}x{in_f} {lin.quant}", flush=True)
        xs = [torch.randn(r, in_f, generator=torch.Generator().manual_seed(r)).to(torch.bfloat16) for r in rows]
        refs = dequantized_product(lin, torch.cat(xs)).split(rows)  # one pass over the weight for every row count
        for r, x, ref in zip(rows, xs, refs):
            case = f"{args.mode} {out_f}x{in_f} rows={r}"
            print(f"START {case}", flush=True)
            y = lin(x).float()
            err = float((y - ref).abs().max()) / (float(ref.abs().max()) + 1e-6)
            if not bool(torch.isfinite(y).all()):
                print(f"BAD {case} non-finite output", flush=True)
            elif err > TOLERANCE:
                print(f"BAD {case} relative error {err:.3g}", flush=True)
            else:
                print(f"OK {case} {err:.3g}", flush=True)
        del lin
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
