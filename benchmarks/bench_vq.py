"""VQ-16 benchmark: janus_core.decode_tokens (tokens -> 384x384 images) and encode_images, time and peak memory.

Random weights at the real VQ-16 size (base channels 128, latent 256, 2 residual blocks per level, channel
multipliers 1,1,2,2,4, codebook 16384 x 8), built as transformers' Janus with a tiny text model, written as
a checkpoint folder and loaded with janus_core.load(with_encoder=True).

Peak memory on CPU: the kernel's peak-RSS mark is reset right before each call (write "5" to
/proc/self/clear_refs) and VmHWM is read after it; the table shows the peak and its rise above the RSS at the
start of the call (the activations and the output buffer). On CUDA: torch.cuda.max_memory_allocated after
reset_peak_memory_stats (and its rise above memory_allocated at the start), timings bracketed by synchronize.

    python benchmarks/bench_vq.py                       # CPU float32, decode batches 1,4,16; encode 1,4
    python benchmarks/bench_vq.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import (
    MIB,
    RESULTS,
    machine_info,
    md_table,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
    write_outputs,
)

FULL_VQ = {"base_channels": 128, "latent_channels": 256, "num_res_blocks": 2, "num_embeddings": 16384,
           "embed_dim": 8}


def _sync(torch, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def measure(torch, device: str, fn) -> dict:
    _trim()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        gpu_before = torch.cuda.memory_allocated()
    rss_before = rss_bytes()
    method = reset_peak_rss()
    _sync(torch, device)
    t0 = time.perf_counter()
    out = fn()
    _sync(torch, device)
    res = {"seconds": time.perf_counter() - t0, "rss_before": rss_before, "peak_rss": peak_rss_bytes(),
           "rss_method": method}
    if cuda:
        res["gpu_before"] = gpu_before
        res["gpu_peak"] = torch.cuda.max_memory_allocated()
    del out
    return res


def summarise(op: str, batch: int, runs: list[dict], chunk: int) -> dict:
    s = statistics.median(r["seconds"] for r in runs)
    rec = {"op": op, "batch": batch, "chunk_images": chunk, "seconds": [r["seconds"] for r in runs],
           "median_s": s, "ms_per_image": 1000 * s / batch, "images_per_s": batch / s,
           "rss_before": runs[0]["rss_before"], "peak_rss": max(r["peak_rss"] for r in runs),
           "peak_rss_rise": max(r["peak_rss"] - r["rss_before"] for r in runs), "rss_method": runs[0]["rss_method"]}
    if "gpu_peak" in runs[0]:
        rec["gpu_peak"] = max(r["gpu_peak"] for r in runs)
        rec["gpu_peak_rise"] = max(r["gpu_peak"] - r["gpu_before"] for r in runs)
    return rec


def render(results: list[dict], args, machine: dict, info: dict) -> str:
    cuda = args.device.startswith("cuda")
    head = (f"## VQ-16 benchmark ({args.device}, {args.dtype}, 384x384, median of {args.repeats}, "
            f"threads = {info['threads']} ({'set by --threads' if args.threads else 'torch default'}))")
    lines = [head, "",
             (f"Machine: {machine.get('cpu', '?')}, {machine.get('cpu_count')} CPUs"
              f"{', ' + machine['gpu'] if 'gpu' in machine else ''}; torch {machine['torch']}. VQ weights "
              f"{info['weights_bytes'] / MIB:.1f} MiB (decoder + encoder + codebook); janus_core's per-image "
              f"activation estimate {info['per_image_bytes'] / MIB:.0f} MiB, decode budget "
              f"{'library default' if args.budget_mib is None else f'{args.budget_mib} MiB'}."), ""]
    headers = ["op", "batch", "chunk (images per call)", "ms/image", "images/s", "peak RSS MiB", "peak RSS rise MiB"]
    if cuda:
        headers += ["peak GPU MiB", "peak GPU rise MiB"]
    rows = []
    for r in results:
        row = [r["op"], r["batch"], r["chunk_images"], f"{r['ms_per_image']:.0f}", f"{r['images_per_s']:.3f}",
               f"{r['peak_rss'] / MIB:.0f}", f"{r['peak_rss_rise'] / MIB:.0f}"]
        if cuda:
            row += [f"{r['gpu_peak'] / MIB:.0f}", f"{r['gpu_peak_rise'] / MIB:.0f}"]
        rows.append(row)
    lines.append(md_table(headers, rows))
    lines += ["", (f"Peak RSS method: {results[0]['rss_method'] if results else '?'}, reset right before each call; "
                   "rise = peak minus RSS at the start of the call (activations + output).")]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (CUDA default)")
    p.add_argument("--batch", default="1,4,16", help="decode batch sizes")
    p.add_argument("--encode-batch", default="1,4", help="encode batch sizes ('' to skip)")
    p.add_argument("--repeats", type=int, default=None, help="default 1 on CPU, 3 on CUDA")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--budget-mib", type=int, default=None, help="decode_tokens(budget_bytes=...) in MiB")
    p.add_argument("--small", action="store_true", help="tiny VQ (smoke tests only)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    args.repeats = args.repeats or (3 if cuda else 1)
    args.batch = [int(b) for b in args.batch.split(",") if b]
    args.encode_batch = [int(b) for b in args.encode_batch.split(",") if b]
    if args.json is None:
        args.json = str(RESULTS / f"vq_{args.device.split(':')[0]}_{args.dtype}.json")
    return args


def main(argv=None) -> int:
    import torch

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = machine_info(torch)
    from janus_core import decode_tokens, encode_images, load
    from janus_core.vq import chunk_size, per_image_bytes
    from tests.tiny_checkpoint import build_hf_model, write_checkpoint

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="janus-bench-vq-") as tmp:
        hf = build_hf_model(vq=None if args.small else FULL_VQ, seed=0)
        folder = write_checkpoint(hf, Path(tmp) / "vq")
        del hf
        _trim()
        _, vq = load(folder, dtype="float32", device=args.device, vq_dtype=args.dtype, with_encoder=True)
    _trim()
    info = {"threads": torch.get_num_threads(), "weights_bytes": sum(p.numel() * p.element_size()
                                                                       for p in vq.model.parameters()),
            "per_image_bytes": per_image_bytes(vq), "dtype": str(vq.dtype)}
    print(f"VQ loaded in {time.perf_counter() - t0:.1f}s: {info}", flush=True)
    budget = None if args.budget_mib is None else args.budget_mib * MIB
    gen = torch.Generator().manual_seed(0)
    decode_tokens(vq, torch.randint(0, vq.codebook_size, (1, 24, 24), generator=gen), budget_bytes=budget)  # warm-up
    results = []
    try:
        for batch in args.batch:
            tokens = torch.randint(0, vq.codebook_size, (batch, 24, 24), generator=gen)
            runs = [measure(torch, args.device, lambda t=tokens: decode_tokens(vq, t, budget_bytes=budget))
                    for _ in range(args.repeats)]
            results.append(summarise("decode", batch, runs, chunk_size(vq, batch, budget)))
            print(f"decode batch {batch}: {results[-1]['ms_per_image']:.0f} ms/image, peak RSS rise "
                  f"{results[-1]['peak_rss_rise'] / MIB:.0f} MiB", flush=True)
        for batch in args.encode_batch:
            images = torch.rand((batch, 384, 384, 3), generator=gen)
            runs = [measure(torch, args.device, lambda x=images: encode_images(vq, x, budget_bytes=budget))
                    for _ in range(args.repeats)]
            results.append(summarise("encode", batch, runs, chunk_size(vq, batch, budget)))
            print(f"encode batch {batch}: {results[-1]['ms_per_image']:.0f} ms/image", flush=True)
    finally:
        if results:
            md = render(results, args, machine, info)
            print("\n" + md)
            write_outputs(Path(args.json), {"benchmark": "vq", "args": vars(args), "machine": machine, "info": info,
                                            "wall_s": time.perf_counter() - t0, "results": results}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
