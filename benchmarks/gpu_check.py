"""CUDA checks that CI (CPU only) cannot run, on a tiny random checkpoint:

- the compiled step (torch.compile, mode="reduce-overhead" = CUDA graphs) gives the eager path's tokens;
- the second compiled call reuses the captured step (no recompilation) and is faster than eager;
- image i of a batch with seed s == a batch of one with seed s + i, on CUDA;
- a cancelled run leaves no GPU memory behind; decoding gives finite 0..1 pixels;
- int8 / int4 (quantize=): loaded on CUDA, their products match the dequantized weights; an int4 model loaded on
  the CPU and moved with `.to("cuda")` (what the editor's model manager does) gives the same logits as one
  loaded on CUDA, and moves back to the CPU exactly; the text-embedding table stays on the CPU throughout;
  compiled int8 sampling equals eager int8 sampling.

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
        quantized_checks(folder, check)
    print(f"{failures} failed", flush=True)
    return 1 if failures else 0


def quantized_checks(folder, check) -> None:
    import torch

    from janus_core import load_generator, prepare_cond, sample_tokens
    from janus_core import quantize as q
    from janus_core.model import Linear

    for mode in ("int8", "int4"):
        lm = load_generator(folder, dtype="bfloat16", device="cuda", quantize=mode)
        lin = lm.model.layers[0].feed_forward.w13
        table = lm.model.embed_tokens.weight
        check(f"[{mode}] stored {lin.quant} on cuda ({lin.layout}); text table on the CPU",
              lin.weight.is_cuda and table.device.type == "cpu")
        x = torch.randn(4, lin.in_features, device="cuda", dtype=torch.bfloat16)
        if lin.quant == "int8":
            deq = q.dequantize_int8(lin.weight, lin.scales)
        else:
            deq = q.dequantize_int4_plain(q.int4_to_plain(lin.weight, lin.layout, lin.in_features, lin.group),
                                          lin.scales, lin.group)
        ref = x.float() @ deq.t()
        err = float((lin(x).float() - ref).abs().max() / ref.abs().max())
        check(f"[{mode}] product vs dequantized weight", err < 2e-2, f"(rel. error {err:.2e})")
        cond = prepare_cond(lm, "a photo of a cat")
        eager = sample_tokens(lm, cond, seed=1, temperature=0)
        compiled = sample_tokens(lm, cond, seed=1, temperature=0, compile=True)
        same = float((eager.tokens == compiled.tokens).float().mean())
        check(f"[{mode}] compiled == eager greedy tokens", same > 0.9, f"(agreement {same:.3f})")
        if mode == "int4":
            moved = load_generator(folder, dtype="bfloat16", device="cpu", quantize="int4")
            cpu_plain = [q.int4_to_plain(m.weight, m.layout, m.in_features, m.group) for m in moved.model.modules()
                         if isinstance(m, Linear) and m.quant == "int4"]
            moved.model.to("cuda")
            moved.device = torch.device("cuda")
            ids = torch.tensor([cond.cond_ids])
            with torch.inference_mode():
                a = lm.model.image_logits(lm.model.embed_text(ids)[:, -1].to(torch.bfloat16))
                b = moved.model.image_logits(moved.model.embed_text(ids)[:, -1].to(torch.bfloat16))
            check("[int4] CPU-loaded model moved to cuda == loaded on cuda", torch.equal(a, b),
                  f"(max diff {float((a - b).abs().max()):.2e})")
            check("[int4] text table stayed on the CPU", moved.model.embed_tokens.weight.device.type == "cpu")
            moved.model.to("cpu")
            back = [q.int4_to_plain(m.weight, m.layout, m.in_features, m.group) for m in moved.model.modules()
                    if isinstance(m, Linear) and m.quant == "int4"]
            check("[int4] moved back to the CPU exactly", all(torch.equal(x, y) for x, y in zip(cpu_plain, back)))
        del lm
        torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
