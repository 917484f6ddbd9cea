"""Where janus_core.sample_tokens spends its time per decode step on the CPU (torch.profiler + micro-benchmarks).

    python benchmarks/profile_sampler.py --shape mini --batch 1 --tokens 64 --threads 1

Prints (and writes to benchmarks/results/profile_<shape>_b<batch>_t<threads>.txt): ms/step for greedy and
for temperature-1 sampling, the torch.profiler operator table of a greedy run (self CPU time, calls per
step), and micro-benchmarks of the pieces a step is made of (gen head GEMM at 1 and 2 threads, the
per-row Exp noise fill vs one fill, softmax/draw).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_sampler import COMMON_TEXT, SHAPES, SMALL_VQ, _set_core_tokens
from benchmarks.common import RESULTS


class Tee(io.StringIO):
    """Collects what is printed and echoes it to the real stdout at once (partial results survive a kill)."""

    def write(self, s):
        sys.__stdout__.write(s)
        sys.__stdout__.flush()
        return super().write(s)


def timeit(fn, n: int = 20) -> float:
    """Median ms of fn() over n calls (after 3 warm-up calls)."""
    for _ in range(3):
        fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return 1000 * ts[len(ts) // 2]


def sampling_costs(torch, bb: int, vocab: int) -> str:
    from janus_core.sampling import draw, fill_noise, probabilities

    gens = [torch.Generator().manual_seed(i) for i in range(bb)]
    noise = torch.empty(bb, vocab)
    lg = torch.randn(bb, vocab)
    return (f"fill_noise (per-row generators) {timeit(lambda: fill_noise(noise, gens)):.3f} ms; "
            f"one exponential_ over all rows {timeit(lambda: noise.exponential_()):.3f} ms; "
            f"probabilities(T=1) {timeit(lambda: probabilities(lg, 1.0)):.3f} ms; "
            f"draw(probabilities) {timeit(lambda: draw(probabilities(lg, 1.0), noise)):.3f} ms")


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="mini")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="also time two successive compile=True calls")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from janus_core import load, prepare_cond, sample_tokens
    from janus_core.sampling import cfg_mix
    from tests.tiny_checkpoint import build_hf_model, write_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        hf = build_hf_model(text={**SHAPES[args.shape], **COMMON_TEXT}, vq=SMALL_VQ, seed=0)
        folder = write_checkpoint(hf, Path(tmp) / args.shape)
        del hf
        lm, _ = load(folder, dtype="float32", device="cpu")
    cond = prepare_cond(lm, "a photo of a cat sitting on a red chair")
    _set_core_tokens(args.tokens)
    n, b = args.tokens, args.batch
    buf = Tee()
    with redirect_stdout(buf):
        print(f"# profile: {args.shape}, batch {b}, {n} tokens, threads {torch.get_num_threads()}, "
              f"torch {torch.__version__}\n")
        sample_tokens(lm, cond, batch_size=b, temperature=0)  # warm-up
        for temp in (0.0, 1.0):
            t0 = time.perf_counter()
            sample_tokens(lm, cond, batch_size=b, temperature=temp)
            dt = time.perf_counter() - t0
            print(f"sample_tokens temperature={temp}: {1000 * dt / n:.2f} ms/step (incl. prefill, {n} steps)")

        if args.compile:
            for k in range(2):
                t0 = time.perf_counter()
                sample_tokens(lm, cond, batch_size=b, temperature=0, compile=True)
                dt = time.perf_counter() - t0
                print(f"sample_tokens compile=True, call {k + 1}: {dt:.1f} s total = {1000 * dt / n:.2f} ms/step")

        # operator profile of a greedy run
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            sample_tokens(lm, cond, batch_size=b, temperature=0)
        ka = prof.key_averages()
        total_self = sum(e.self_cpu_time_total for e in ka)
        print(f"\n## torch.profiler, greedy run: total self CPU {total_self / 1000:.1f} ms = "
              f"{total_self / 1000 / n:.2f} ms/step; ops per step "
              f"{sum(e.count for e in ka if e.key.startswith('aten::')) / n:.0f} aten calls (nested ones included)\n")
        print(ka.table(sort_by="self_cpu_time_total", row_limit=30))

        # micro-benchmarks of the pieces of one step
        model = lm.model
        rows = 2 * b
        h = torch.randn(rows, model.cfg.hidden_size)
        print("\n## micro-benchmarks (median ms per call)\n")
        for thr in (1, 2):
            torch.set_num_threads(thr)
            print(f"threads={thr}: gen_head [{rows},{model.cfg.hidden_size}]->[{rows},{model.image_vocab}]: "
                  f"{timeit(lambda: model.image_logits(h)):.3f} ms; "
                  f"one layer's wqkv GEMV: {timeit(lambda: model.layers[0].attention.wqkv(h[:, None])):.3f} ms; "
                  f"w13: {timeit(lambda: model.layers[0].feed_forward.w13(h[:, None])):.3f} ms")
        torch.set_num_threads(args.threads)
        logits = torch.randn(rows, model.image_vocab)
        for bb in (1, 4, 16):
            print(f"batch {bb}: " + sampling_costs(torch, bb, model.image_vocab))
        print(f"cfg_mix [{rows},{model.image_vocab}]: {timeit(lambda: cfg_mix(logits, b, 5.0)):.3f} ms; "
              f"argmax: {timeit(lambda: torch.argmax(logits[:b], -1)):.3f} ms")
        tok = torch.zeros(b, dtype=torch.long)
        print(f"image_token_embeds (gen_embed + aligner MLP): "
              f"{timeit(lambda: model.image_token_embeds(tok.repeat(2))):.3f} ms")
        x = torch.randn(rows, 1, model.cfg.hidden_size)
        print(f"RMSNorm [{rows},1,{model.cfg.hidden_size}]: {timeit(lambda: model.norm(x)):.3f} ms "
              f"(x {2 * model.cfg.num_layers + 1} per step)")
    text = buf.getvalue()
    out = RESULTS / f"profile_{args.shape}_b{b}_t{args.threads}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
