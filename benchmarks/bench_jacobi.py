"""Speculative Jacobi decoding, measured side by side in one run.

    python benchmarks/bench_jacobi.py                        # everything below (demo model + pro1b-4L)
    python benchmarks/bench_jacobi.py --parts forwards       # only the forwards table

1. forwards: on the demo model (cfg 5, temperature 1, held-out captions x seeds), forwards per image for every
   window in --windows and every draft initialisation, batch 1; all runs make the same tokens as the sequential
   loop (checked: any difference is reported with its near-tie gap).
2. wall: seconds per image, sequential vs jacobi (--wall-window) vs auto, fp32 and bf16, batch 1 and 4, on the
   demo model, one warm-up first, the median of --repeats; with --wall-models demo,pro1b-4L also sequential vs
   auto on that random checkpoint, where no window pays (what auto costs when it should not use the window);
   and for --cost-models the cost of one window forward against one one-token forward, which says how many
   tokens a window must confirm to pay.
3. cost: how steady auto's measured window cost is. On the demo model's real decode step (the sampler's own
   throw-away forward), --cost-repeats fresh measurements by `tuning.measure_window_cost` and, alternating with
   them, by the rule it replaced (the fastest of 3 forwards of each width, over the whole measurement), against
   a long reference (the median of 40 paired rounds): the spread is what one machine could keep for good.
4. exactness at scale: --exact-seeds images per caption, jacobi (--wall-window) against sequential; the share of
   identical images and, for each that differs, the relative gap between the two largest p/E at the first
   differing position.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "training"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from benchmarks.common import RESULTS, machine_info, machine_line, md_table, write_outputs  # noqa: E402


def captions(n: int) -> list[str]:
    from benchmarks.demo_accuracy import held_out_captions

    return held_out_captions(n)


def forwards_table(lm, texts, seeds, windows, inits, grouped_windows=(), zipar_windows=()):
    """Forwards per image of exact jacobi for every window x draft init, and of the lossy jacobi_grouped ("up")
    at `grouped_windows` and zipar at `zipar_windows` (their 'identical' column counts images equal to the
    sequential ones: few, by design)."""
    import torch

    from janus_core import prepare_cond, sample_tokens

    rows, rec = [], []
    conds = [prepare_cond(lm, t) for t in texts]
    refs = {(k, s): sample_tokens(lm, c, seed=s, cfg=5.0, decoding="sequential").tokens
            for k, c in enumerate(conds) for s in range(seeds)}
    runs = ([("jacobi", w, init) for w in windows for init in inits]
            + [("jacobi_grouped", w, "up") for w in grouped_windows] + [("zipar", w, "-") for w in zipar_windows])
    for decoding, w, init in runs:
        fw, same = [], 0
        for k, c in enumerate(conds):
            for s in range(seeds):
                out = sample_tokens(lm, c, seed=s, cfg=5.0, decoding=decoding, window=w,
                                    draft_init="up" if init == "-" else init)
                fw.append(out.settings["forwards"])
                same += bool(torch.equal(out.tokens, refs[(k, s)]))
        rec.append({"decoding": decoding, "window": w, "draft_init": init, "forwards": fw, "identical": same,
                    "images": len(fw)})
        label = {"jacobi": f"{w}", "jacobi_grouped": f"{w}, grouped (lossy)"}.get(decoding, f"zipar, lead {w} (lossy)")
        rows.append([label, init, f"{statistics.mean(fw):.0f}",
                     f"{min(fw)}-{max(fw)}", f"{576 / statistics.mean(fw):.2f}x", f"{same}/{len(fw)}"])
        print("forwards", rows[-1], flush=True)
    return rows, rec


def per_image_seconds(lm, cond, batch, decodings, window, repeats):
    """{decoding: (median seconds per image, forwards)}: one warm-up of each (forms measured, allocator warm),
    then the decodings interleaved, round after round, in alternating order (a noisy shared machine drifts
    between minutes: each round's contenders see the same drift), seeds varying by round."""
    from janus_core import sample_tokens

    costs = {}

    def once(decoding, seed):  # "zipar:8": zipar with its own window (the lead); "sequential:again": a control
        name, _, own = decoding.partition(":")
        t0 = time.perf_counter()
        out = sample_tokens(lm, cond, seed=seed, batch_size=batch, cfg=5.0, decoding=name,
                            window=int(own) if own.isdigit() else window)
        costs[decoding] = out.settings["window_cost"]
        return (time.perf_counter() - t0) / batch, out.settings["forwards"]

    for d in decodings:
        once(d, 0)  # auto's first run on this machine and model measures the window's cost (kept for the rest)
    runs = {d: [] for d in decodings}
    for r in range(repeats):
        for d in decodings if r % 2 == 0 else decodings[::-1]:  # alternated: no decoding always runs first
            runs[d].append(once(d, r))
    return {d: (statistics.median(t for t, _ in v), round(statistics.mean(f for _, f in v)), costs[d])
            for d, v in runs.items()}


def forward_cost(lm, batch: int, width: int, steps: int = 8) -> float:
    """Median seconds of one decode forward of `width` positions per row (2 x batch rows) after a 64-token prompt,
    through the sampler's own forward (cache, masks, head included)."""
    import torch

    from janus_core.model import KVCache
    from janus_core.sampler import position_tables
    from janus_core.tuning import prepare_forms

    m = lm.model
    rows, prompt = 2 * batch, 64
    cache = KVCache(m.cfg, rows, prompt + 576 + width, "cpu", lm.dtype)
    cos, sin, _, _ = position_tables(m.cfg, None, prompt, prompt + 576 + width, "cpu", lm.dtype)
    prepare_forms(m, rows * width)
    times = []
    with torch.inference_mode():
        x = torch.randn(rows, prompt, m.cfg.hidden_size, dtype=lm.dtype)
        m.forward_hidden(x, cos[:, :, :prompt], sin[:, :, :prompt], cache, 0, None)
        tok = torch.zeros(rows, width, dtype=torch.long)
        for i in range(steps + 2):
            pos = prompt + i * width
            keys = torch.arange(pos + width)
            mask = (keys[None] <= (pos + torch.arange(width))[:, None])[None, None]
            t0 = time.perf_counter()
            h = m.forward_hidden(m.image_token_embeds(tok), cos[:, :, pos : pos + width], sin[:, :, pos : pos + width],
                                 cache, pos, mask if width > 1 else None)
            m.image_logits(h).float()
            if i >= 2:
                times.append(time.perf_counter() - t0)
    cache.release()
    return statistics.median(times)


def cost_table(folder, name, batches, dtypes, window):
    from janus_core import load_generator

    rows, rec = [], []
    for dtype in dtypes:
        lm = load_generator(folder, dtype=dtype, device="cpu")
        for b in batches:
            one, win = forward_cost(lm, b, 1), forward_cost(lm, b, window)
            rec.append({"model": name, "dtype": dtype, "batch": b, "window": window, "one_s": one, "window_s": win})
            rows.append([name, dtype, b, f"{1000 * one:.1f}", f"{1000 * win:.1f}", f"{win / one:.2f}"])
            print("cost", rows[-1], flush=True)
        del lm
    return rows, rec


def wall_table(models, batches, dtypes, window, repeats):
    """models: (name, folder, prompt, decodings timed besides sequential)."""
    from janus_core import load_generator, prepare_cond

    rows, rec = [], []
    for name, folder, prompt, decodings in models:
        for dtype in dtypes:
            lm = load_generator(folder, dtype=dtype, device="cpu")
            cond = prepare_cond(lm, prompt)
            for b in batches:
                res = per_image_seconds(lm, cond, b, ("sequential", *decodings), window, repeats)
                seq = res["sequential"][0]
                rec.append({"model": name, "dtype": dtype, "batch": b, "window": window,
                            **{f"{d}_s": r[0] for d, r in res.items()}, **{f"{d}_forwards": r[1] for d, r in res.items()},
                            "auto_window_cost": res["auto"][2] if "auto" in res else None})
                zipar = next((d for d in res if d.startswith("zipar")), None)
                again = f"{res['sequential:again'][0]:.2f}" if "sequential:again" in res else "-"
                rows.append([name, dtype, b, f"{seq:.2f}", again]
                            + [f"{res[d][0]:.2f} ({res[d][1]} fw, {seq / res[d][0]:.2f}x)" if d in res else "-"
                               for d in ("jacobi", "auto", zipar)]
                            + [f"{res['auto'][2]:.2f}" if "auto" in res and res["auto"][2] else "-"])
                print("wall", rows[-1], flush=True)
            del lm
    return rows, rec


class _Captured(Exception):
    pass


def with_throwaway_forward(lm, cond, batch: int, window: int, measure):
    """measure(forward) on the sampler's own throw-away decode step (`forward(width)`) for this model and batch,
    run where auto would measure its window cost (the run is abandoned there); returns what measure returns."""
    from janus_core import sample_tokens, sampler, tuning

    def capture(forward, _window):
        raise _Captured(measure(forward))

    saved, kept = sampler.measure_window_cost, tuning._KEPT
    sampler.measure_window_cost, tuning._KEPT = capture, {}
    try:
        sample_tokens(lm, cond, seed=0, batch_size=batch, cfg=5.0, decoding="auto", window=window)
    except _Captured as captured:
        return captured.args[0]
    finally:
        sampler.measure_window_cost, tuning._KEPT = saved, kept
    raise RuntimeError("auto did not measure a window cost")


def previous_cost_rule(forward, window: int, repeats: int = 3) -> float:
    """The rule measure_window_cost replaced: the fastest of `repeats` forwards of each width (after one warm-up
    each, interleaved), over the whole measurement; rounded as measure_window_cost rounds."""
    from janus_core.tuning import COST_STEPS

    times = {window: [], 1: []}
    for i in range(repeats + 1):
        for width in (window, 1):
            t0 = time.perf_counter()
            forward(width)
            if i:
                times[width].append(time.perf_counter() - t0)
    ratio = max(1.0, min(times[window]) / min(times[1]))
    return 2 ** (round(math.log2(ratio) * COST_STEPS) / COST_STEPS)


def reference_cost(forward, window: int, rounds: int = 40) -> float:
    ratios = []
    for _ in range(rounds):
        t = {}
        for width in (window, 1, 1, window):
            t0 = time.perf_counter()
            forward(width)
            t[width] = min(t.get(width, 1e9), time.perf_counter() - t0)
        ratios.append(t[window] / t[1])
    return statistics.median(ratios)


def cost_rule_table(demo, texts, batches, dtypes, window, repeats):
    from janus_core import load_generator, prepare_cond
    from janus_core.tuning import measure_window_cost

    rows, rec = [], []
    for dtype in dtypes:
        lm = load_generator(demo, dtype=dtype, device="cpu")
        cond = prepare_cond(lm, texts[0])
        for b in batches:
            def measure(forward):
                before = reference_cost(forward, window)
                new, old, spent = [], [], []
                for _ in range(repeats):
                    old.append(previous_cost_rule(forward, window))
                    t0 = time.perf_counter()
                    new.append(measure_window_cost(forward, window))
                    spent.append(time.perf_counter() - t0)
                return statistics.median([before, reference_cost(forward, window)]), new, old, spent

            ref, new, old, spent = with_throwaway_forward(lm, cond, b, window, measure)
            rec.append({"dtype": dtype, "batch": b, "window": window, "reference": ref, "previous": old, "now": new,
                        "now_seconds": spent})
            for name, v in (("previous (fastest of 3 each)", old), ("now (median of paired rounds)", new)):
                off = [abs(x / ref - 1) for x in v]
                rows.append([dtype, b, f"{ref:.2f}", name, f"{min(v):.2f} / {statistics.median(v):.2f} / {max(v):.2f}",
                             f"{100 * max(off):.0f} %", sum(o > 0.15 for o in off)])
                print("cost rule", rows[-1], flush=True)
            print(f"  now: {statistics.median(spent):.2f} s per measurement", flush=True)
        del lm
    return rows, rec


def exactness(lm, texts, seeds, window):
    from janus_core import prepare_cond, sample_tokens

    sys.path.insert(0, str(ROOT / "tests"))
    from test_jacobi import _first_difference, near_tie_gap

    same, total, gaps = 0, 0, []
    for k, t in enumerate(texts):
        cond = prepare_cond(lm, t)
        seq = sample_tokens(lm, cond, seed=100 * k, batch_size=seeds, cfg=5.0, decoding="sequential").tokens
        jac = sample_tokens(lm, cond, seed=100 * k, batch_size=seeds, cfg=5.0, decoding="jacobi", window=window).tokens
        for i in range(seeds):
            total += 1
            where = _first_difference(seq[i : i + 1], jac[i : i + 1])
            if where is None:
                same += 1
            else:
                gaps.append(near_tie_gap(lm, cond, seq, 100 * k, i, where[1], 5.0, 1.0))
    return same, total, gaps


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="forwards,wall,exact")
    p.add_argument("--captions", type=int, default=4)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--windows", default="4,8,16,32")
    p.add_argument("--inits", default="up,left,random")
    p.add_argument("--wall-window", type=int, default=16)
    p.add_argument("--grouped-windows", default="16", help="windows of the lossy jacobi_grouped in the forwards table")
    p.add_argument("--zipar-windows", default="8,16", help="leads of the lossy zipar in the forwards table")
    p.add_argument("--wall-zipar", type=int, default=8, help="zipar's lead in the demo wall-clock rows (0: not timed)")
    p.add_argument("--control", action="store_true", help="time sequential twice per round: the second is the "
                   "noise a speed-up must beat")
    p.add_argument("--cost-models", default="demo,pro1b-4L", help="models whose per-forward cost is measured")
    p.add_argument("--wall-models", default="demo", help="models timed per image: demo, and random checkpoints "
                   "such as pro1b-4L (where the window never pays: sequential against auto only)")
    p.add_argument("--random-batches", default="1", help="batches timed on the random --wall-models")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--batches", default="1,4")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cost-repeats", type=int, default=12, help="fresh window-cost measurements per rule (cost part)")
    p.add_argument("--exact-captions", type=int, default=8)
    p.add_argument("--exact-seeds", type=int, default=8)
    p.add_argument("--json", default=str(RESULTS / "jacobi.json"))
    args = p.parse_args(argv)
    from janus_core import load_generator
    from janus_core.hub import resolve_model

    parts = args.parts.split(",")
    # auto's window cost is measured afresh (in the warm-up) rather than read from this machine's kept file
    store = tempfile.TemporaryDirectory()
    os.environ["JANUS_TUNING_CACHE"] = str(Path(store.name) / "tuning.json")
    info = machine_info(torch)
    record: dict = {"benchmark": "jacobi", "args": vars(args), "machine": info}
    md = [f"## Speculative Jacobi decoding ({machine_line(info)})"]
    demo = resolve_model("demo")
    texts = captions(args.captions)
    if "forwards" in parts:
        lm = load_generator(demo, dtype="float32", device="cpu")
        rows, record["forwards"] = forwards_table(lm, texts, args.seeds, [int(w) for w in args.windows.split(",")],
                                                  args.inits.split(","),
                                                  [int(w) for w in args.grouped_windows.split(",") if w],
                                                  [int(w) for w in args.zipar_windows.split(",") if w])
        md += ["", f"Forwards per image, demo model, cfg 5, temperature 1, fp32, {len(texts)} captions x {args.seeds} "
               "seeds (sequential: 576):", "",
               md_table(["window", "draft init", "forwards (mean)", "range", "fewer forwards", "identical to sequential"],
                        rows)]
    batches, dtypes = [int(b) for b in args.batches.split(",")], args.dtypes.split(",")
    if "wall" in parts:
        rows, record["wall"] = [], []
        with tempfile.TemporaryDirectory() as tmp:
            from benchmarks.bench_sampler import build_checkpoint

            for name in [m for m in args.wall_models.split(",") if m]:
                if name == "demo":
                    zipar = (f"zipar:{args.wall_zipar}",) if args.wall_zipar else ()
                    control = ("sequential:again",) if args.control else ()
                    r, rec = wall_table([("demo", demo, texts[0], (*control, "jacobi", "auto", *zipar))], batches, dtypes,
                                        args.wall_window, args.repeats)
                else:
                    folder = build_checkpoint(name, Path(tmp) / name, "float32")
                    r, rec = wall_table([(name, folder, texts[0], ("sequential:again", "auto")[not args.control:])],
                                        [int(b) for b in args.random_batches.split(",")], dtypes, args.wall_window,
                                        args.repeats)
                rows += r
                record["wall"] += rec
        md += ["", f"Seconds per image (median of {args.repeats} interleaved rounds, seeds 0.., after a warm-up), cfg 5, "
               f"temperature 1; jacobi window "
               f"{args.wall_window}; auto = jacobi with one-token steps where the window does not pay:", "",
               md_table(["model", "dtype", "batch", "sequential s", "sequential again s (control)",
                         "jacobi s (forwards, speed-up)",
                         "auto s (forwards, speed-up)", f"zipar lead {args.wall_zipar} s (lossy)",
                         "auto's window cost"], rows)]
        with tempfile.TemporaryDirectory() as tmp:
            from benchmarks.bench_sampler import build_checkpoint

            cost_rows = []
            for name in [m for m in args.cost_models.split(",") if m]:
                folder = demo if name == "demo" else build_checkpoint(name, Path(tmp) / name, "float32")
                r, rec = cost_table(folder, name, batches, dtypes, args.wall_window)
                cost_rows += r
                record.setdefault("cost", []).extend(rec)
        if cost_rows:
            md += ["", f"One decode forward (prompt 64 + cache, head included, median of 8): one position against a "
                   f"window of {args.wall_window}; the ratio is how many tokens a window forward must confirm to pay:",
                   "", md_table(["model", "dtype", "batch", "one-token forward ms", "window forward ms", "ratio"],
                                cost_rows)]
    if "cost" in parts:
        rows, record["cost_rule"] = cost_rule_table(demo, texts, batches, dtypes, args.wall_window, args.cost_repeats)
        md += ["", f"auto's window cost (window {args.wall_window}, demo model, cfg 5), {args.cost_repeats} fresh "
               "measurements per rule, alternating, against a reference (median of 40 paired rounds, taken before "
               "and after); off = the largest relative distance from the reference:", "",
               md_table(["dtype", "batch", "reference", "rule", "min / median / max", "off (largest)",
                         "measurements off by > 15 %"], rows)]
    if "exact" in parts:
        lm = load_generator(demo, dtype="float32", device="cpu")
        same, total, gaps = exactness(lm, captions(args.exact_captions), args.exact_seeds, args.wall_window)
        record["exact"] = {"identical": same, "images": total, "gaps": gaps}
        md += ["", f"Exactness, demo model fp32, window {args.wall_window}: {same}/{total} images identical to the "
               f"sequential loop ({100 * same / total:.1f} %)" + (f"; relative p/E gaps at the first difference: "
                                                                 f"{', '.join(f'{g:.1e}' for g in gaps)}" if gaps else ".")]
    text = "\n".join(md)
    print("\n" + text)
    write_outputs(Path(args.json), record, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
