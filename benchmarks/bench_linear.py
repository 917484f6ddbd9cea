"""The decode step's matrix products in the three forms torch offers, on the CPU (why `janus_core.model.Linear`
computes few-row products as `(W @ x.T).T`).

    python benchmarks/bench_linear.py --threads 1,2

For each shape set (every weight one decode step reads: 4 per layer + the aligner and head MLPs) and each row
count (2 x batch with CFG), times one pass over all the weights, median of `--repeats`, forms interleaved:

- `x @ Wt`: weight stored [in, out] (what janus_core stored before commit f874092);
- `F.linear(x, W)`: weight [out, in], nn.Linear / transformers;
- `(W @ x.T).T`: weight [out, in], janus_core's CPU form for few rows.

Every weight is a separate tensor (133 MiB for mini, 960 MiB for pro1b-4L), so nothing stays in cache.
Writes linear_forms.{json,md} to benchmarks/results/ (or --out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, machine_info, machine_line

SETS = {  # (in, out) of each weight one decode step reads
    "mini": [(512, 1536), (512, 512), (512, 2816), (1408, 512)] * 8
    + [(512, 512), (512, 512), (512, 512), (512, 16384)],
    "pro1b-4L": [(2048, 6144), (2048, 2048), (2048, 11264), (5632, 2048)] * 4
    + [(2048, 2048), (2048, 2048), (2048, 2048), (2048, 16384)],
}
FORMS = ("x @ Wt", "F.linear(x, W)", "(W @ x.T).T")


def time_forms(torch, shapes, rows: int, repeats: int, dtype=None) -> dict[str, float]:
    import torch.nn.functional as F

    dtype = dtype or torch.float32
    weights = [torch.randn(o, i).to(dtype) for i, o in shapes]  # [out, in]
    weights_t = [w.t().contiguous() for w in weights]  # [in, out]
    xs = {i: torch.randn(rows, i).to(dtype) for i, _ in shapes}
    products = {
        "x @ Wt": lambda x, w, wt: x @ wt,
        "F.linear(x, W)": lambda x, w, wt: F.linear(x, w),
        "(W @ x.T).T": lambda x, w, wt: (w @ x.t()).t(),
    }
    times = {f: [] for f in FORMS}
    for _ in range(repeats + 1):  # the first pass warms up
        for form in FORMS:
            fn = products[form]
            t0 = time.perf_counter()
            for w, wt in zip(weights, weights_t):
                fn(xs[w.shape[1]], w, wt)
            times[form].append(time.perf_counter() - t0)
    return {f: 1000 * statistics.median(t[1:]) for f, t in times.items()}


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--rows", default="1,2,4,8,16,32")
    ap.add_argument("--sets", default="mini,pro1b-4L")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtypes", default="float32", help="comma list: float32, bfloat16")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    ap.add_argument("--name", default="linear_forms", help="file stem of the results (name the machine)")
    args = ap.parse_args(argv)
    records = []
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            for name in args.sets.split(","):
                shapes = SETS[name]
                mib = sum(i * o for i, o in shapes) * dtype.itemsize / 2**20
                for rows in [int(r) for r in args.rows.split(",")]:
                    ms = time_forms(torch, shapes, rows, args.repeats, dtype)
                    records.append({"dtype": dtype_name, "threads": threads, "set": name, "weights_mib": mib,
                                    "rows": rows, "ms": ms})
                    print(f"{dtype_name} threads {threads} {name} rows {rows}: "
                          + ", ".join(f"{f} {v:.2f} ms" for f, v in ms.items()), flush=True)
    lines = [f"## One decode step's products, CPU (median of {args.repeats})", "",
             machine_line(machine_info(torch)), "",
             "| dtype | threads | weights | rows | " + " | ".join(f"{f} ms" for f in FORMS)
             + " | best | GB/s of the best |",
             "|---|---|---|---|" + "---|" * (len(FORMS) + 2)]
    for r in records:
        best = min(r["ms"], key=r["ms"].get)
        gbs = r["weights_mib"] * 2**20 / (r["ms"][best] / 1000) / 1e9
        lines.append(f"| {r['dtype']} | {r['threads']} | {r['set']} ({r['weights_mib']:.0f} MiB) | {r['rows']} | "
                     + " | ".join(f"{r['ms'][f]:.2f}" for f in FORMS) + f" | {best} | {gbs:.1f} |")
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.md").write_text(table)
    (args.out / f"{args.name}.json").write_text(json.dumps({"machine": machine_info(torch), "records": records},
                                                           indent=2))
    print(f"wrote {args.out / (args.name + '.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
