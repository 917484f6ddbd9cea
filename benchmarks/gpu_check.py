"""CUDA checks that CI (CPU only) cannot run, on a tiny random checkpoint:

- the compiled step (torch.compile, mode="reduce-overhead" = CUDA graphs) gives the eager path's tokens;
- the second compiled call reuses the captured step (no recompilation) and is faster than eager;
- image i of a batch with seed s == a batch of one with seed s + i, on CUDA;
- a cancelled run leaves no GPU memory behind; decoding gives finite 0..1 pixels.

    python benchmarks/gpu_check.py            # prints one line per check and exits 1 if any fails
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    import torch

    from janus_core import GenerationCancelled, decode_tokens, load, prepare_cond, sample_tokens
    from janus_core.sampler import drop_static_decoders
    from tests.tiny_checkpoint import build_hf_model, write_checkpoint

    failures = 0

    def check(name: str, ok: bool, detail: str = "") -> None:
        nonlocal failures
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_checkpoint(build_hf_model(), Path(tmp) / "tiny")
        for dtype in ("float32", "bfloat16"):
            lm, vq = load(folder, dtype=dtype, device="cuda")
            cond = prepare_cond(lm, "a photo of a cat", "blurry, low quality")

            def timed(**kw):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                out = sample_tokens(lm, cond, seed=3, batch_size=4, temperature=0.9, **kw)
                torch.cuda.synchronize()
                return out, time.perf_counter() - t0

            timed()  # warm-up
            eager, t_eager = timed()
            compiled, t_first = timed(compile=True)
            compiled2, t_second = timed(compile=True)
            same = (eager.tokens == compiled.tokens).float().mean().item()
            exact = dtype == "float32"
            check(f"[{dtype}] compiled == eager tokens", same == 1.0 or not exact, f"(agreement {same:.4f})")
            check(f"[{dtype}] compiled call is repeatable", torch.equal(compiled.tokens, compiled2.tokens))
            check(f"[{dtype}] compiled step reused", t_second < t_first and len(lm.static_decoders) == 1,
                  f"(eager {t_eager:.2f}s, compiled first {t_first:.2f}s, second {t_second:.2f}s)")
            single = sample_tokens(lm, cond, seed=4, batch_size=1, temperature=0.9)
            check(f"[{dtype}] batch image 1 == single seed s+1", torch.equal(single.tokens[0], eager.tokens[1]))
            drop_static_decoders(lm)

            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            steps = []
            cancelled = False
            try:
                sample_tokens(lm, cond, batch_size=8, progress=lambda s, t, _: steps.append(s),
                              should_cancel=lambda: len(steps) >= 10)
            except GenerationCancelled:
                cancelled = True
            torch.cuda.synchronize()
            after = torch.cuda.memory_allocated()
            check(f"[{dtype}] cancel raises and frees the cache", cancelled and after <= before,
                  f"(stopped at step {steps[-1]}; allocated {before} -> {after} bytes)")
            images = decode_tokens(vq, eager)
            check(f"[{dtype}] decode", images.shape == (4, 384, 384, 3) and bool(torch.isfinite(images).all())
                  and 0 <= float(images.min()) and float(images.max()) <= 1)
            lm = vq = None
            torch.cuda.empty_cache()
    print(f"{failures} failed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
