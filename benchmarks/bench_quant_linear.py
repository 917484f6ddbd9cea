"""One decode step's products of a Janus-Pro-1B layer + head, float vs int8 vs int4 (by group size), on the CPU.

    python benchmarks/bench_quant_linear.py                  # torch's default threads, 2 rows (batch 1 with CFG)
    python benchmarks/bench_quant_linear.py --rows 2,8 --threads 1,2

Random weights N(0, 1/fan_in) of the shapes one layer and the generation head multiply (wqkv 6144x2048,
wo 2048x2048, w13 11264x2048, w2 2048x5632, head 2048x2048 + 16384x2048), each product timed through
janus_core's own `Linear` (so it measures exactly what the model runs), all forms interleaved in each repeat,
median of the repeats. Also the relative error of the stored weight against the float one, per int4 group size:
what the group size trades (speed, bytes, error).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, machine_info, md_table, write_outputs  # noqa: E402

SHAPES = [(6144, 2048), (2048, 2048), (11264, 2048), (2048, 5632), (2048, 2048), (16384, 2048)]  # (out, in)
GROUPS = (32, 64, 128, 256)


def forms():
    """name -> (activation dtype, quantize mode, int4 group)."""
    import torch

    out = {"fp32 (janus_core Linear)": (torch.float32, "none", None),
           "bf16 (janus_core Linear)": (torch.bfloat16, "none", None),
           "int8, fp32 activations (cast to bf16 inside)": (torch.float32, "int8", None),
           "int8, bf16 activations": (torch.bfloat16, "int8", None)}
    for g in GROUPS:
        out[f"int4 g{g}, bf16 activations"] = (torch.bfloat16, "int4", g)
    return out


def build(dtype, mode, group, weights):
    import torch

    from janus_core import quantize
    from janus_core.model import Linear

    layers, errors = [], []
    saved = quantize.INT4_GROUP
    quantize.INT4_GROUP = group or saved
    try:
        for w in weights:
            lin = Linear(w.shape[1], w.shape[0], bias=False)
            if mode == "none":
                lin.weight = torch.nn.Parameter(w.to(dtype), requires_grad=False)
                deq = lin.weight.float()
            else:
                lin.set_quantized(mode, w)
                if mode == "int8":
                    deq = quantize.dequantize_int8(lin.weight, lin.scales)
                else:
                    plain = quantize.int4_to_plain(lin.weight, lin.layout, lin.in_features, lin.group)
                    deq = quantize.dequantize_int4_plain(plain, lin.scales, lin.group)
            errors.append(float((deq - w).norm() / w.norm()))
            layers.append(lin)
    finally:
        quantize.INT4_GROUP = saved
    nbytes = sum(p.numel() * p.element_size() for lin in layers for p in lin.parameters())
    return layers, nbytes, statistics.mean(errors)


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="2")
    p.add_argument("--threads", default="", help="comma list (default: torch's default)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", default=str(RESULTS / "quant_linear.json"))
    args = p.parse_args(argv)
    torch.manual_seed(0)
    weights = [torch.randn(o, i) / i**0.5 for o, i in SHAPES]
    built = {name: build(*spec, weights) for name, spec in forms().items()}
    records = []
    for threads in [int(t) for t in args.threads.split(",") if t] or [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        for rows in [int(r) for r in args.rows.split(",")]:
            times = {name: [] for name in built}
            inputs = {name: [torch.randn(rows, w.shape[1]).to(forms()[name][0]) for w in weights] for name in built}
            with torch.inference_mode():
                for rep in range(args.repeats + 1):
                    for name, (layers, _, _) in built.items():
                        t0 = time.perf_counter()
                        for lin, x in zip(layers, inputs[name]):
                            lin(x)
                        if rep:  # the first pass warms up
                            times[name].append(time.perf_counter() - t0)
            base = statistics.median(times["fp32 (janus_core Linear)"])
            bf16 = statistics.median(times["bf16 (janus_core Linear)"])
            for name, (_, nbytes, err) in built.items():
                ms = statistics.median(times[name])
                records.append({"threads": threads, "rows": rows, "form": name, "ms": 1000 * ms, "bytes": nbytes,
                                "weight_rel_error": err, "vs_fp32": base / ms, "vs_bf16": bf16 / ms})
    headers = ["threads", "rows", "form", "ms (median)", "t_fp32 / t", "t_bf16 / t", "weight MiB",
               "weight error (rel. Frobenius)"]
    rows = [[r["threads"], r["rows"], r["form"], f"{r['ms']:.2f}", f"{r['vs_fp32']:.2f}x", f"{r['vs_bf16']:.2f}x",
             f"{r['bytes'] / 2**20:.1f}", f"{r['weight_rel_error']:.4f}"] for r in records]
    md = "\n".join(["## One layer + head of Janus-Pro-1B: products by weight format (CPU)", "",
                    f"median of {args.repeats} passes, forms interleaved in each pass", "", md_table(headers, rows)])
    print(md)
    write_outputs(Path(args.json), {"benchmark": "quant_linear", "args": vars(args), "machine": machine_info(torch),
                                    "results": records}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
