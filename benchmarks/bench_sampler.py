"""Sampler benchmark: janus_core.sample_tokens vs the official reference loop vs transformers' Janus.generate.

Random weights (no download). For every shape a transformers `JanusForConditionalGeneration` is built with
random weights (tests/tiny_checkpoint.build_hf_model), written once as a checkpoint folder, and every
contender loads that same folder, so all of them run on identical weights:

  a           janus_core.load(...) + janus_core.sample_tokens(temperature=0)            (this project)
  a-compiled  the same with compile=True                                              (--compile only)
  b           the official generation_inference.py loop, written here on transformers' LlamaModel
              (hf.model.language_model) with its default DynamicCache, interleaved cond/uncond rows,
              gen head on the last hidden state, CFG, argmax (greedy)
  c           hf.generate(generation_mode="image", do_sample=False, guidance_scale=5)  (static cache)
  a-<variant> janus_core at another dtype / weight quantization (--variants bf16,int8,int4): a-bf16 loads with
              dtype=bfloat16; a-int8 / a-int4 with quantize="int8" / "int4" (activations, norms, KV cache at
              --dtype; the quantized products cast their input to bfloat16); a-int8@bf16 = int8 with bf16 everywhere

All exact contenders (a, b, c, a-compiled) produce greedy tokens; the run fails (exit 1) unless they are
identical. The variants round differently, so where their greedy stream parts from a is reported, not failed
(benchmarks/quant_fidelity.py measures what quantization costs).

Process layout: one worker process for janus_core (a, a-compiled) and one for transformers (b, c), both
started with the same thread setting; they run alternately (the order rotates every repeat) and the median
is reported. Peak RSS per run: the worker resets the kernel's high-water mark (write "5" to
/proc/self/clear_refs) right before the run and reads VmHWM from /proc/self/status after it, so each
figure is the peak resident size of the process that ran that contender, during that run (it includes
that process's interpreter + libraries + its own weights; the baseline RSS before loading any weights is
reported too). On CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats, and timings
are bracketed by torch.cuda.synchronize.

    python benchmarks/bench_sampler.py                         # CPU, mini + pro1b-4L, batch 1 and 4
    python benchmarks/bench_sampler.py --device cuda --dtype bfloat16 --shapes pro1b,pro7b
    python benchmarks/bench_sampler.py --variants bf16,int8,int4      # + janus_core bf16 / int8 / int4 side by side
"""

from __future__ import annotations

import argparse
import gc
import math
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import (
    MIB,
    RESULTS,
    machine_info,
    machine_line,
    md_table,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
    write_outputs,
)

SHAPES = {
    # smoke tests only
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
             "intermediate_size": 128, "vocab_size": 512},
    # text vocab 512 for mini: only the prompt's embedding rows are ever read, so a small table is fine
    "mini": {"hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 8,
                 "intermediate_size": 1408, "vocab_size": 512},
    "pro1b-4L": {"hidden_size": 2048, "num_hidden_layers": 4, "num_attention_heads": 16, "num_key_value_heads": 16,
                     "intermediate_size": 5632, "vocab_size": 102400},
    "pro1b": {"hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16,
                  "intermediate_size": 5632, "vocab_size": 102400},
    "pro7b": {"hidden_size": 4096, "num_hidden_layers": 30, "num_attention_heads": 32, "num_key_value_heads": 32,
                  "intermediate_size": 11008, "vocab_size": 102400},
}  # fmt: skip
COMMON_TEXT = {"max_position_embeddings": 4096, "rope_theta": 10000.0, "rms_norm_eps": 1e-6}
# the sampler benchmark never decodes images: a small VQ keeps building/writing the checkpoint fast
SMALL_VQ = {"base_channels": 32, "latent_channels": 32, "num_res_blocks": 1, "num_embeddings": 16384}
PROMPT = "a photo of a cat sitting on a red chair"
CFG = 5.0
WARMUP_TOKENS = 16
CONTENDER_DOC = {
    "a": "janus_core.sample_tokens (greedy)",
    "a-compiled": "janus_core.sample_tokens(compile=True)",
    "b": "reference loop (official script on LlamaModel + DynamicCache)",
    "c": "transformers JanusForConditionalGeneration.generate(image)",
}
VARIANTS = {  # --variants name -> (dtype or None = --dtype, quantize)
    "bf16": ("bfloat16", "none"), "fp32": ("float32", "none"), "int8": (None, "int8"), "int4": (None, "int4"),
    "int8@bf16": ("bfloat16", "int8"), "int4@bf16": ("bfloat16", "int4"),
}


def contender_doc(cnt: str) -> str:
    if cnt in CONTENDER_DOC:
        return CONTENDER_DOC[cnt]
    dtype, quantize = VARIANTS[cnt[2:]]
    return f"janus_core {quantize if quantize != 'none' else ''}{' ' if quantize != 'none' and dtype else ''}" \
           f"{dtype or ''}".strip()


# ----------------------------------------------------------------------------------------------- workers


def _sync(torch, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _set_threads(torch, threads):
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def _set_core_tokens(n: int) -> None:
    """janus_core always samples 576 tokens; for short smoke runs shrink its module constants (n = g*g)."""
    from janus_core import sampler

    g = math.isqrt(n)
    if g * g != n:
        raise SystemExit(f"--tokens must be a perfect square (janus_core reshapes tokens to a grid), got {n}")
    sampler.NUM_IMAGE_TOKENS, sampler.GRID = n, g


def copy_bandwidth(torch, device: str, nbytes: int = 1 << 30, iters: int = 10) -> float:
    """Device copy bandwidth in bytes/s, counting read + write: 2 * nbytes per copy_."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    _sync(torch, device)
    t0 = time.perf_counter()
    for _ in range(iters):
        dst.copy_(src)
    _sync(torch, device)
    dt = time.perf_counter() - t0
    del src, dst
    return 2 * nbytes * iters / dt


def _measure(torch, device, fn):
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    rss_before = rss_bytes()
    method = reset_peak_rss()
    _sync(torch, device)
    t0 = time.perf_counter()
    tokens = fn()
    _sync(torch, device)
    seconds = time.perf_counter() - t0
    res = {"seconds": seconds, "tokens": tokens.reshape(tokens.shape[0], -1).cpu().tolist(),
           "rss_before": rss_before, "peak_rss": peak_rss_bytes(), "rss_method": method}
    if device.startswith("cuda"):
        res["gpu_peak"] = torch.cuda.max_memory_allocated()
    return res


def core_worker(conn, folder: str, device: str, dtype: str, threads: int | None, quantize: str = "none") -> None:
    """Loads the checkpoint with janus_core and serves ("run", contender, batch, n_tokens) requests."""
    try:
        import torch

        threads = _set_threads(torch, threads)
        from janus_core import load, prepare_cond, sample_tokens
        from janus_core.model import KVCache

        base_rss = rss_bytes()  # interpreter + torch + janus_core imported, no weights yet

        lm, vq = load(folder, dtype=dtype, device=device, quantize=quantize)
        del vq
        gc.collect()
        cond = prepare_cond(lm, PROMPT)
        model = lm.model
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        # bytes streamed per decode step: every weight except the two embedding tables (only rows are read)
        streamed = weights - sum(p.numel() * p.element_size()
                                 for p in (model.embed_tokens.weight, model.gen_embed.weight))
        info = {"threads": threads, "base_rss": base_rss, "loaded_rss": rss_bytes(), "weights_bytes": weights,
                "streamed_weights_bytes": streamed, "prompt_ids": list(cond.cond_ids),
                "uncond_ids": list(cond.uncond_ids), "dtype": str(lm.dtype), "device": str(lm.device)}
        if device.startswith("cuda"):
            info["copy_bandwidth"] = copy_bandwidth(torch, device)
        conn.send(("ok", info))
        while True:
            msg = conn.recv()
            if msg is None:
                break
            _, contender, batch, n = msg
            _set_core_tokens(n)
            rows, max_len = 2 * batch, len(cond.cond_ids) + n
            kv = KVCache.nbytes(model.cfg, rows, max_len, lm.dtype)
            kv_avg = KVCache.nbytes(model.cfg, rows, len(cond.cond_ids) + n // 2, lm.dtype)  # mean filled prefix
            def fn(batch=batch, compiled=contender == "a-compiled"):
                return sample_tokens(lm, cond, seed=0, batch_size=batch, cfg=CFG, temperature=0,
                                     compile=compiled).tokens

            res = _measure(torch, device, fn)
            res.update(kv_bytes=kv, kv_read_avg_bytes=kv_avg)
            conn.send(("ok", res))
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails loudly
        conn.send(("error", traceback.format_exc()))


def reference_loop(hf, prompt_ids: list[int], pad_id: int, batch: int, n_tokens: int, cfg_weight: float):
    """deepseek-ai/Janus generation_inference.py `generate`, greedy (argmax instead of multinomial).

    Interleaved rows (even = conditional, odd = unconditional with the prompt replaced by pad), one
    LlamaModel call per token with the cache it returned (a DynamicCache), gen head on the last hidden
    state, CFG on the logits, the chosen token embedded for both rows of its image.
    """
    import torch

    language_model = hf.model.language_model  # transformers' LlamaModel
    device = hf.device
    with torch.inference_mode():
        tokens = torch.zeros((batch * 2, len(prompt_ids)), dtype=torch.int).to(device)
        for i in range(batch * 2):
            tokens[i, :] = torch.tensor(prompt_ids, dtype=torch.int)
            if i % 2 != 0:
                tokens[i, 1:-1] = pad_id
        inputs_embeds = language_model.get_input_embeddings()(tokens)
        generated_tokens = torch.zeros((batch, n_tokens), dtype=torch.int).to(device)
        outputs = None
        for i in range(n_tokens):
            outputs = language_model(inputs_embeds=inputs_embeds, use_cache=True,
                                     cache=outputs.cache if i != 0 else None)
            hidden_states = outputs.last_hidden_state
            logits = hf.model.generation_head(hidden_states[:, -1, :])
            logit_cond = logits[0::2, :]
            logit_uncond = logits[1::2, :]
            logits = logit_uncond + cfg_weight * (logit_cond - logit_uncond)
            next_token = torch.argmax(logits, dim=-1, keepdim=True)  # greedy stands in for softmax+multinomial
            generated_tokens[:, i] = next_token.squeeze(dim=-1)
            next_token = torch.cat([next_token.unsqueeze(dim=1), next_token.unsqueeze(dim=1)], dim=1).view(-1)
            img_embeds = hf.prepare_embeddings_for_image_generation(next_token)
            inputs_embeds = img_embeds.unsqueeze(dim=1)
    return generated_tokens


def hf_generate(hf, prompt_ids: list[int], batch: int):
    import torch

    ids = torch.tensor([prompt_ids] * batch, dtype=torch.long, device=hf.device)
    with torch.inference_mode():
        return hf.generate(ids, attention_mask=torch.ones_like(ids), generation_mode="image",
                           do_sample=False, guidance_scale=CFG)


def hf_worker(conn, folder: str, device: str, dtype: str, threads: int | None) -> None:
    """Loads the checkpoint with transformers and serves ("run", "b"|"c", batch, n_tokens, ids, pad) requests."""
    try:
        import torch

        threads = _set_threads(torch, threads)
        from transformers import JanusForConditionalGeneration
        from transformers.utils import logging as hf_logging

        base_rss = rss_bytes()  # interpreter + torch + transformers imported, no weights yet

        hf_logging.set_verbosity_error()
        hf = JanusForConditionalGeneration.from_pretrained(folder, dtype=getattr(torch, dtype)).to(device).eval()
        gc.collect()
        weights = sum(p.numel() * p.element_size() for p in hf.parameters())
        conn.send(("ok", {"threads": threads, "base_rss": base_rss, "loaded_rss": rss_bytes(),
                          "weights_bytes": weights,
                          "attn_implementation": hf.config.text_config._attn_implementation}))
        while True:
            msg = conn.recv()
            if msg is None:
                break
            _, contender, batch, n, ids, pad_id = msg
            hf.model.vision_model.config.num_image_tokens = n
            # generation_config.generation_kwargs (boi id) does not survive save_pretrained: set it again
            hf.generation_config.generation_kwargs = {"boi_token_id": ids[-1]}
            if contender == "b":
                def fn(ids=ids, pad_id=pad_id, batch=batch, n=n):
                    return reference_loop(hf, ids, pad_id, batch, n, CFG)
            else:
                def fn(ids=ids, batch=batch):
                    return hf_generate(hf, ids, batch)
            res = _measure(torch, device, fn)
            conn.send(("ok", res))
    except BaseException:  # noqa: BLE001
        conn.send(("error", traceback.format_exc()))


class Worker:
    def __init__(self, ctx, target, *args):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child, *args), daemon=True)
        self.proc.start()
        child.close()

    def recv(self):
        status, payload = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"benchmark worker failed:\n{payload}")
        return payload

    def call(self, *msg):
        self.conn.send(msg)
        return self.recv()

    def close(self):
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(timeout=60)
        if self.proc.is_alive():
            self.proc.kill()


# ---------------------------------------------------------------------------------------------- driver


def build_checkpoint(shape: str, folder: Path, dtype: str, device: str = "cpu") -> Path:
    """Random weights written once as a checkpoint folder. On CUDA they are drawn on the GPU: initialising
    Janus-Pro-7B's 7 B parameters on the CPU would take minutes of a short device session."""
    import torch

    from tests.tiny_checkpoint import build_hf_model, write_checkpoint

    t0 = time.perf_counter()
    with torch.device(device if device.startswith("cuda") else "cpu"):
        model = build_hf_model(text={**SHAPES[shape], **COMMON_TEXT}, vq=SMALL_VQ, seed=0)
    wdtype = getattr(torch, dtype)
    shards = 1 if shape in ("tiny", "mini", "pro1b-4L") else 8
    write_checkpoint(model, folder, dtype=wdtype, shards=shards)
    del model
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()  # the workers (other processes) need the memory
    print(f"[{shape}] random checkpoint written in {time.perf_counter() - t0:.1f}s", flush=True)
    return folder


def first_mismatch(x: list, y: list):
    for r, (ra, rb) in enumerate(zip(x, y)):
        for i, (ta, tb) in enumerate(zip(ra, rb)):
            if ta != tb:
                return r, i, ta, tb
    return None


def run_shape(shape: str, args, ctx, results: list, infos: dict, flush=None) -> None:
    variants = [f"a-{v}" for v in args.variants]
    contenders = ["a", "b", "c"] + (["a-compiled"] if args.compile else []) + variants
    with tempfile.TemporaryDirectory(prefix=f"janus-bench-{shape}-") as tmp:
        folder = build_checkpoint(shape, Path(tmp) / shape, args.dtype, args.device)
        core = Worker(ctx, core_worker, str(folder), args.device, args.dtype, args.threads)
        hfw = Worker(ctx, hf_worker, str(folder), args.device, args.dtype, args.threads)
        extra = {}
        try:
            cinfo, hinfo = core.recv(), hfw.recv()
            infos[shape] = {"janus_core": cinfo, "transformers": hinfo}
            for v in variants:  # one process each: its peak RSS is its own
                dtype, quantize = VARIANTS[v[2:]]
                extra[v] = Worker(ctx, core_worker, str(folder), args.device, dtype or args.dtype, args.threads,
                                  quantize)
                infos[shape][v] = extra[v].recv()
                print(f"[{shape}] loaded {v}: weights {infos[shape][v]['weights_bytes'] / MIB:.1f} MiB", flush=True)
            print(f"[{shape}] loaded: janus_core weights {cinfo['weights_bytes'] / MIB:.1f} MiB, "
                  f"transformers weights {hinfo['weights_bytes'] / MIB:.1f} MiB, threads {cinfo['threads']}/"
                  f"{hinfo['threads']}, HF attention {hinfo['attn_implementation']}", flush=True)
            ids, pad_id = cinfo["prompt_ids"], cinfo["uncond_ids"][1] if len(cinfo["uncond_ids"]) > 2 else 0

            def run(contender, batch, n):
                if contender in extra:
                    return extra[contender].call("run", "a", batch, n)
                if contender.startswith("a"):
                    return core.call("run", contender, batch, n)
                return hfw.call("run", contender, batch, n, ids, pad_id)

            for batch in args.batch:
                for cnt in contenders:  # warm-up: allocator, lazy init, and compilation for a-compiled
                    # janus_core compiles one step per (rows, cache length rounded up to 64): warm the timed size
                    run(cnt, batch, args.tokens if cnt == "a-compiled" else WARMUP_TOKENS)
                runs = {cnt: [] for cnt in contenders}
                for rep in range(args.repeats):
                    order = contenders[rep % len(contenders):] + contenders[: rep % len(contenders)]
                    for cnt in order:
                        res = run(cnt, batch, args.tokens)
                        runs[cnt].append(res)
                        print(f"[{shape} b{batch} rep{rep}] {cnt}: {res['seconds']:.2f}s "
                              f"({1000 * res['seconds'] / args.tokens:.1f} ms/token), "
                              f"peak RSS {res['peak_rss'] / MIB:.0f} MiB", flush=True)
                        ref = runs["a"][0]["tokens"] if runs["a"] else None
                        if ref is not None:
                            for other, lst in runs.items():
                                for r in lst:
                                    mm = first_mismatch(ref, r["tokens"])
                                    if mm is not None and other in extra:
                                        if r is lst[-1] and r is runs[cnt][-1]:
                                            print(f"[{shape} b{batch}] {other}: greedy tokens part from a at image "
                                                  f"{mm[0]}, token {mm[1]} (expected: another dtype / quantization)",
                                                  flush=True)
                                        continue
                                    if mm is not None and args.dtype != "float32":
                                        # half precision: implementations round differently, so greedy streams
                                        # may part ways; report where instead of failing (exactness is fp32's job)
                                        print(f"[{shape} b{batch}] {other}: greedy tokens part from a at image "
                                              f"{mm[0]}, token {mm[1]} ({args.dtype} rounding)", flush=True)
                                    elif mm is not None:
                                        raise SystemExit(
                                            f"TOKEN MISMATCH [{shape} batch {batch}]: contender {other} differs from "
                                            f"a at image {mm[0]}, token {mm[1]}: {mm[3]} vs {mm[2]}")
                rec = summarise(shape, batch, runs, cinfo, hinfo, args)
                for v in variants:
                    rec["contenders"][v]["weights_bytes"] = infos[shape][v]["weights_bytes"]
                    rec["contenders"][v]["streamed_weights_bytes"] = infos[shape][v]["streamed_weights_bytes"]
                    rec["contenders"][v]["first_divergence"] = first_mismatch(runs["a"][0]["tokens"],
                                                                              runs[v][0]["tokens"])
                results.append(rec)
                if flush is not None:
                    flush()  # results so far reach the disk even if a later shape is interrupted
        finally:
            core.close()
            hfw.close()
            for w in extra.values():
                w.close()


def summarise(shape, batch, runs, cinfo, hinfo, args) -> dict:
    n = args.tokens
    med = {cnt: statistics.median(r["seconds"] for r in lst) for cnt, lst in runs.items()}
    a0 = runs["a"][0]
    rec = {
        "shape": shape, "batch": batch, "tokens": n, "repeats": args.repeats, "threads": cinfo["threads"],
        "device": args.device, "dtype": args.dtype, "tokens_identical": True,
        "weights_bytes": cinfo["weights_bytes"], "streamed_weights_bytes": cinfo["streamed_weights_bytes"],
        "kv_bytes": a0["kv_bytes"], "kv_read_avg_bytes": a0["kv_read_avg_bytes"],
        "core_base_rss": cinfo["base_rss"], "core_loaded_rss": cinfo["loaded_rss"],
        "hf_base_rss": hinfo["base_rss"], "hf_loaded_rss": hinfo["loaded_rss"],
        "hf_weights_bytes": hinfo["weights_bytes"], "rss_method": a0["rss_method"],
        "contenders": {},
    }
    for cnt, lst in runs.items():
        s = med[cnt]
        c = {"what": contender_doc(cnt), "seconds": [r["seconds"] for r in lst], "median_s": s,
             "ms_per_token": 1000 * s / n, "images_per_s": batch / s,
             "peak_rss": max(r["peak_rss"] for r in lst), "rss_before": max(r["rss_before"] for r in lst)}
        if "gpu_peak" in lst[0]:
            c["gpu_peak"] = max(r["gpu_peak"] for r in lst)
        rec["contenders"][cnt] = c
    for cnt in med:
        rec["contenders"][cnt]["speedup_over_a"] = med["a"] / med[cnt]
        if "a-bf16" in med:
            rec["contenders"][cnt]["speedup_over_a_bf16"] = med["a-bf16"] / med[cnt]
    rec["speedup_a_over_b"] = med["b"] / med["a"]
    rec["speedup_a_over_c"] = med["c"] / med["a"]
    if "a-compiled" in med:
        rec["speedup_acompiled_over_b"] = med["b"] / med["a-compiled"]
        rec["speedup_acompiled_over_c"] = med["c"] / med["a-compiled"]
    limit = 1.15 * (rec["weights_bytes"] + rec["kv_bytes"])
    peak_a = rec["contenders"]["a"]["peak_rss"]
    rec["rss_limit_bytes"] = limit
    rec["core_peak_minus_base_rss"] = peak_a - cinfo["base_rss"]
    rec["rss_target_met_total"] = peak_a <= limit
    rec["rss_target_met_above_baseline"] = rec["core_peak_minus_base_rss"] <= limit
    if "copy_bandwidth" in cinfo:
        bw = cinfo["copy_bandwidth"]
        per_step = rec["streamed_weights_bytes"] + rec["kv_read_avg_bytes"]
        rec["copy_bandwidth"] = bw
        rec["bytes_per_step"] = per_step
        rec["floor_ms_per_step"] = 1000 * per_step / bw
    return rec


def render(results: list[dict], args, infos: dict, machine: dict) -> str:
    cuda = args.device.startswith("cuda")
    out = [(f"## Sampler benchmark ({args.device}, {args.dtype}, {args.tokens} tokens, "
           f"median of {args.repeats}, threads = {results[0]['threads'] if results else '?'} "
           f"({'torch default' if not args.threads else 'set by --threads'}))"), ""]
    out.append(f"{machine_line(machine)}; "
               f"transformers {machine.get('transformers')}, janus_core at git {machine.get('git_head', '?')}"
               f"{' (+ local changes)' if machine.get('janus_core_dirty') else ''}. "
               f"Greedy tokens identical across all contenders: "
               f"{all(r['tokens_identical'] for r in results)}.")
    out.append("")
    headers = ["shape", "batch", "contender", "ms/token", "images/s", "a speed-up vs b (t_b/t_a)",
               "a speed-up vs c (t_c/t_a)", "peak RSS MiB"]
    if cuda:
        headers += ["peak GPU MiB", "floor ms/step"]
    rows = []
    for r in results:
        for cnt, c in r["contenders"].items():
            row = [r["shape"], r["batch"], f"{cnt}: {c['what']}", f"{c['ms_per_token']:.2f}",
                   f"{c['images_per_s']:.4f}",
                   f"{r['speedup_a_over_b']:.2f}x" if cnt == "a" else
                   (f"{r['speedup_acompiled_over_b']:.2f}x" if cnt == "a-compiled" else ""),
                   f"{r['speedup_a_over_c']:.2f}x" if cnt == "a" else
                   (f"{r['speedup_acompiled_over_c']:.2f}x" if cnt == "a-compiled" else ""),
                   f"{c['peak_rss'] / MIB:.0f}"]
            if cuda:
                row += [f"{c.get('gpu_peak', 0) / MIB:.0f}", f"{r['floor_ms_per_step']:.2f}"]
            rows.append(row)
    out.append(md_table(headers, rows))
    if args.variants:
        out += ["", f"janus_core variants against janus_core at {args.dtype} (a) and at bfloat16 (a-bf16), same run:", ""]
        vrows = []
        for r in results:
            for cnt, c in r["contenders"].items():
                if not cnt.startswith("a"):
                    continue
                div = c.get("first_divergence")
                vrows.append([r["shape"], r["batch"], f"{cnt}: {c['what']}", f"{c['ms_per_token']:.2f}",
                              f"{c['speedup_over_a']:.2f}x",
                              f"{c['speedup_over_a_bf16']:.2f}x" if "speedup_over_a_bf16" in c else "",
                              f"{c.get('streamed_weights_bytes', r['streamed_weights_bytes']) / MIB:.0f}",
                              f"{c['peak_rss'] / MIB:.0f}",
                              "" if cnt in ("a", "a-compiled") else ("none" if div is None else f"token {div[1]}")])
        out.append(md_table(["shape", "batch", "contender", "ms/token", "t_a / t", "t_a-bf16 / t",
                             "weights streamed per step MiB", "peak RSS MiB", "greedy stream parts from a at"],
                            vrows))
    out += ["", "Memory check for janus_core (contender a): weights + KV cache (+15 %) vs peak RSS of its process.", ""]
    mrows = []
    for r in results:
        mrows.append([r["shape"], r["batch"], f"{r['weights_bytes'] / MIB:.1f}", f"{r['kv_bytes'] / MIB:.1f}",
                      f"{r['rss_limit_bytes'] / MIB:.1f}", f"{r['core_base_rss'] / MIB:.0f}",
                      f"{r['contenders']['a']['peak_rss'] / MIB:.0f}",
                      f"{r['core_peak_minus_base_rss'] / MIB:.0f}",
                      "yes" if r["rss_target_met_total"] else "no",
                      "yes" if r["rss_target_met_above_baseline"] else "no"])
    out.append(md_table(["shape", "batch", "weights MiB", "KV MiB", "1.15 x (W+KV) MiB",
                         "process baseline RSS MiB (torch imported, no weights)", "peak RSS MiB",
                         "peak - baseline MiB", "peak <= limit", "peak - baseline <= limit"], mrows))
    if cuda and results:
        out += ["", (f"Device copy bandwidth (read + write): {results[0]['copy_bandwidth'] / 1e9:.0f} GB/s. Floor = "
                "(weights streamed per step + mean KV prefix read per step) / bandwidth.")]
    out += ["", (f"Peak RSS method: {results[0]['rss_method'] if results else '?'}, reset right before each run, "
            "in the worker process that ran the contender (janus_core worker for a, transformers worker for b/c).")]
    return "\n".join(out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (CUDA default)")
    p.add_argument("--shapes", default=None, help="comma list of " + ", ".join(SHAPES))
    p.add_argument("--batch", default=None, help="comma list (default 1,4 on CPU; 1,16 on CUDA)")
    p.add_argument("--tokens", type=int, default=576, help="tokens per image (a perfect square; 576 = real)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in every worker")
    p.add_argument("--compile", action="store_true", help="add contender a-compiled (compile=True)")
    p.add_argument("--variants", default="", help="comma list of janus_core variants run side by side: "
                   + ", ".join(VARIANTS))
    p.add_argument("--json", default=None, help="output JSON path (markdown next to it)")
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    args.shapes = (args.shapes or ("pro1b,pro7b" if cuda else "mini,pro1b-4L")).split(",")
    for s in args.shapes:
        if s not in SHAPES:
            p.error(f"unknown shape {s!r}; choose from {', '.join(SHAPES)}")
    args.variants = [v for v in args.variants.split(",") if v]
    for v in args.variants:
        if v not in VARIANTS:
            p.error(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    args.batch = [int(b) for b in (args.batch or ("1,16" if cuda else "1,4")).split(",")]
    if math.isqrt(args.tokens) ** 2 != args.tokens:
        p.error("--tokens must be a perfect square")
    if args.json is None:
        thr = f"t{args.threads}" if args.threads else "tdefault"
        args.json = str(RESULTS / f"sampler_{args.device.split(':')[0]}_{args.dtype}_{thr}.json")
    return args


def main(argv=None) -> int:
    import torch

    args = parse_args(argv)
    ctx = mp.get_context("spawn")
    machine = machine_info(torch)
    results, infos = [], {}
    t0 = time.perf_counter()

    def flush(final: bool = False) -> None:
        md = render(results, args, infos, machine)
        if final:
            print("\n" + md)
        payload = {"benchmark": "sampler", "args": dict(vars(args)), "machine": machine,
                   "wall_s": time.perf_counter() - t0, "complete": final, "results": results, "load_info": infos}
        write_outputs(Path(args.json), payload, md, quiet=not final)

    done = False
    try:
        for shape in args.shapes:
            run_shape(shape, args, ctx, results, infos, flush)
        done = True
    finally:
        if results:
            flush(final=done)  # on a failure (e.g. TOKEN MISMATCH) the JSON says complete: false
            if not done:
                print("\n" + render(results, args, infos, machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
