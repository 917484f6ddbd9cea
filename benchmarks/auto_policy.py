"""How auto's window rule fares against sequential when the kept window cost is wrong, replayed on real traces.

    python benchmarks/auto_policy.py                     # record traces on the demo model, replay the rules
    python benchmarks/auto_policy.py --traces F.json     # replay only (traces recorded before)

auto (decoding="auto") decides from the tokens and one kept number, the window's cost in one-token forwards
(tuning.WidthChooser). On a shared machine that number is not a constant: two careful measurements minutes apart
read 2.4 and 2.8 for the demo model's fp32 batch-1 window, 3.0 and 3.75 at batch 4 (`bench_jacobi.py --parts
cost`). So the rule must hold up when the kept cost is off.

1. record: demo model, cfg 5, temperature 1, window --window: auto runs with its stopping rules switched off (it
   opens with its one-token steps, then windows to the end), and every forward's (width, accepted, hits) is
   logged. Until the forward where a rule would stop the windows, such a run is exactly what auto does, so one
   trace replays any stopping rule exactly (the rest of the run is then one-token steps, one per token).
2. replay: for each loss budget (tuning.LOSS_BUDGET), each true cost and each error of the kept cost, the run's
   time in one-token forwards: (opening) + windows x true cost + the tokens left. Speed-up = 576 / that.
   The rule is the library's own WidthChooser, fed the recorded counts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS, machine_info, machine_line, md_table, write_outputs  # noqa: E402

TOKENS = 576


def record_traces(dtypes, batches, captions, seeds, window):
    import torch

    from benchmarks.bench_jacobi import captions as caption_list
    from janus_core import load_generator, prepare_cond, sample_tokens, tuning
    from janus_core.hub import resolve_model

    saved = (tuning.LOSS_BUDGET, tuning.WidthChooser.record)
    log: list = []

    def logging_record(self, width, accepted, hits=None):
        log.append((width, accepted, hits))
        return saved[1](self, width, accepted, hits)

    tuning.LOSS_BUDGET, tuning.WidthChooser.record = math.inf, logging_record
    traces = []
    try:
        for dtype in dtypes:
            lm = load_generator(resolve_model("demo"), dtype=dtype, device="cpu")
            for batch in batches:
                key = tuning.window_cost_key(lm, 2 * batch, window, torch.get_num_threads())
                tuning.remember("window", {key: 1.0})  # windows always on (the rules that stop them are off)
                runs = max(1, captions * seeds // batch)
                for i in range(runs):
                    text = caption_list(captions)[i % captions]
                    cond = prepare_cond(lm, text)
                    log.clear()
                    out = sample_tokens(lm, cond, seed=100 + i, batch_size=batch, cfg=5.0, decoding="auto",
                                        window=window)
                    assert out.settings["decoding"] == "jacobi", out.settings
                    traces.append({"dtype": dtype, "batch": batch, "caption": text, "seed": 100 + i,
                                   "window": window, "forwards": list(log)})
                    print(f"trace {dtype} b{batch} {i + 1}/{runs}: {len(log)} forwards", flush=True)
            del lm
    finally:
        tuning.LOSS_BUDGET, tuning.WidthChooser.record = saved
    return traces


def replay(trace, chooser, true_cost: float) -> float:
    """Speed-up over sequential of auto on this trace: `chooser` deciding, the true cost paying."""
    time, done = 0.0, 0
    for width, accepted, hits in trace["forwards"]:
        if chooser.width() != width:  # the rule stopped the windows here: one-token steps for the rest
            break
        chooser.record(width, accepted, hits)
        time += true_cost if width > 1 else 1.0
        done += accepted
    return TOKENS / (time + TOKENS - done)


def replay_table(traces, rules, true_costs, errors):
    """rules: [(name, make(window, kept_cost) -> chooser, budget)]; true_costs: {(dtype, batch): [costs]};
    errors: kept / true factors."""
    from janus_core import tuning

    saved = tuning.LOSS_BUDGET
    rows, rec = [], []
    try:
        for name, make, budget in rules:
            tuning.LOSS_BUDGET = budget
            for (dtype, batch), costs in true_costs.items():
                group = [t for t in traces if t["dtype"] == dtype and t["batch"] == batch]
                if not group:
                    continue
                fixed = statistics.mean(TOKENS / _fixed_window_time(t, c) for t in group for c in costs)
                cells = []
                for err in errors:
                    ups = [replay(t, make(t["window"], c * err), c) for t in group for c in costs]
                    cells.append(f"{statistics.mean(ups):.2f} (worst {min(ups):.2f})")
                    rec.append({"rule": name, "dtype": dtype, "batch": batch, "true_costs": costs, "error": err,
                                "mean": statistics.mean(ups), "worst": min(ups)})
                rows.append([name, dtype, batch, "/".join(f"{c:g}" for c in costs), f"{fixed:.2f}", *cells])
                print("replay", rows[-1], flush=True)
    finally:
        tuning.LOSS_BUDGET = saved
    return rows, rec


def _fixed_window_time(trace, true_cost: float) -> float:
    """An auto-like run that never stops its windows (the opening's one-token steps, then windows)."""
    return sum(true_cost if w > 1 else 1.0 for w, _, _ in trace["forwards"])


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--traces", type=Path, default=None, help="replay traces recorded before (skip recording)")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--batches", default="1,4")
    p.add_argument("--captions", type=int, default=8)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--budgets", default="12,8,16,24", help="LOSS_BUDGET values replayed (the library's first)")
    p.add_argument("--costs", default="float32:1=2.4/3.1,float32:4=3.0/3.5,bfloat16:1=1.3/1.5,bfloat16:4=1.6/1.8",
                   help="true window costs per dtype:batch: the range of a window forward's time in the loop over "
                   "a one-token step's, measured on the 2-vCPU AMD EPYC (bench_jacobi.py --parts cost, and in runs)")
    p.add_argument("--errors", default="0.8,1,1.25", help="kept cost / true cost factors")
    p.add_argument("--json", default=str(RESULTS / "auto_policy.json"))
    args = p.parse_args(argv)
    info = machine_info(torch)
    if args.traces:
        traces = json.loads(args.traces.read_text())["traces"]
    else:
        store = tempfile.TemporaryDirectory()
        os.environ["JANUS_TUNING_CACHE"] = str(Path(store.name) / "tuning.json")
        traces = record_traces(args.dtypes.split(","), [int(b) for b in args.batches.split(",")], args.captions,
                               args.seeds, args.window)
    from janus_core import tuning

    rules = [(f"budget {b:g}", lambda window, cost: tuning.WidthChooser(window, True, cost), b)
             for b in (float(x) for x in args.budgets.split(","))]
    costs = {}
    for item in args.costs.split(","):
        key, values = item.split("=")
        dtype, batch = key.split(":")
        costs[(dtype, int(batch))] = [float(v) for v in values.split("/")]
    errors = [float(e) for e in args.errors.split(",")]
    rows, rec = replay_table(traces, rules, costs, errors)
    text = "\n".join([
        f"## auto's window rule replayed on recorded traces ({machine_line(info)})", "",
        f"Demo model, cfg 5, temperature 1, window {args.window}; {len(traces)} traces. Speed-up over sequential in "
        "one-token forwards (mean over traces and true costs, and the worst), for kept costs off by each factor; "
        "'windows always' = the same runs never stopping their windows:", "",
        md_table(["rule", "dtype", "batch", "true costs", "windows always",
                  *[f"kept cost x{e:g}" for e in errors]], rows)])
    print("\n" + text)
    settings = {k: str(v) for k, v in vars(args).items()}
    write_outputs(Path(args.json), {"benchmark": "auto_policy", "args": settings, "machine": info, "traces": traces,
                                    "replay": rec}, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
