"""Time and peak resident memory of loading a checkpoint for generation, against the bytes actually kept.

    python benchmarks/bench_load.py --shape mini --src-dtype float32 --dtype bfloat16 --fmt safetensors
    python benchmarks/bench_load.py --shape mini --quantize int8
    python benchmarks/bench_load.py --extrapolate pro7b --src-dtype bfloat16 --dtype bfloat16   # 7B memory table

Builds a random checkpoint (transformers' Janus, written in the chosen layout/format) in a temp folder, then
loads it in a fresh subprocess and reports: load seconds, peak RSS growth during the load (VmHWM after minus
VmRSS before, from /proc/self/status), and the bytes of the tensors kept (LM for generation + VQ decoder).
The checkpoint also holds an LM head, a vision tower and the VQ encoder, which a generation load skips.

--quantize int8|int4 loads with weight-only quantization; the kept bytes are then split into what sits on the
compute device (the generation model without its text-embedding table, which stays in host memory) and that
table, and the largest full-precision staging tensor of the load is reported (one tensor is read whole, then
quantized). --extrapolate pro7b builds Janus-Pro-7B-shaped checkpoints with 1 and 2 layers, measures none / int8 /
int4 on each, and extrapolates per layer + fixed parts to the 30 layers of the real model (the full 7B random
checkpoint, 14.8 GB in bf16 plus the fp32 model that writes it, does not fit a small machine).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = {
    "tiny": {},  # the test fixtures' checkpoint (tests/tiny_checkpoint.TINY_TEXT)
    "small": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, vocab_size=32000),
    "mini": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
                 num_key_value_heads=8, vocab_size=32000),
    "pro1b-4L": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=4, num_attention_heads=16,
                     num_key_value_heads=16, vocab_size=102400),
    "pro7b-1L": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=1, num_attention_heads=32,
                     num_key_value_heads=32, vocab_size=102400),
    "pro7b-2L": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=2, num_attention_heads=32,
                     num_key_value_heads=32, vocab_size=102400),
}  # fmt: skip
PRO7B_LAYERS = 30


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def measure(folder: str, dtype: str, generate: bool, quantize: str = "none") -> dict:
    import torch

    from janus_core import decode_tokens, load, prepare_cond, sample_tokens
    from janus_core.model import Linear, device_parameters

    torch.set_num_threads(1)
    before = _status("VmRSS")
    t0 = time.perf_counter()
    lm, vq = load(folder, dtype=dtype, device="cpu", quantize=quantize)
    seconds = time.perf_counter() - t0
    peak = _status("VmHWM")
    nbytes = lambda params: sum(p.numel() * p.element_size() for p in params)  # noqa: E731
    kept = nbytes(p for m in (lm.model, vq.model) for p in m.parameters())
    on_device = nbytes(device_parameters(lm.model))
    table = nbytes(lm.model.embed_tokens.parameters())
    elem = torch.empty((), dtype=lm.dtype).element_size()
    staging = max(m.in_features * m.out_features for m in lm.model.modules() if isinstance(m, Linear)) * elem
    files = sum(f.stat().st_size for f in Path(folder).iterdir() if f.suffix in (".safetensors", ".bin"))
    out = {"load_s": round(seconds, 3), "rss_before_mb": before / 2**20, "peak_growth_mb": (peak - before) / 2**20,
           "kept_mb": kept / 2**20, "file_mb": files / 2**20, "quantize": quantize,
           "lm_device_mb": on_device / 2**20, "lm_host_table_mb": table / 2**20, "vq_mb": nbytes(vq.model.parameters()) / 2**20,
           "staging_mb": staging / 2**20}
    if generate:  # one image, 576 tokens + VQ decode, 1 thread
        t0 = time.perf_counter()
        tokens = sample_tokens(lm, prepare_cond(lm, "a photo of a cat"), seed=0)
        out["sample_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        decode_tokens(vq, tokens)
        out["decode_s"] = round(time.perf_counter() - t0, 3)
        out["peak_rss_total_mb"] = _status("VmHWM") / 2**20
    return out


def run_measure(folder: Path, dtype: str, quantize: str = "none", generate: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--measure", str(folder), "--dtype", dtype, "--quantize", quantize]
    out = subprocess.run(cmd + (["--generate"] if generate else []), check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def extrapolate(args) -> int:
    """Janus-Pro-7B memory by quantize choice, from 1- and 2-layer checkpoints of its dimensions."""
    rows, raw = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for shape in ("pro7b-1L", "pro7b-2L"):
            folder = Path(tmp) / shape
            t0 = time.perf_counter()
            build(folder, shape, args.layout, args.fmt, args.src_dtype)
            print(f"[{shape}] checkpoint written in {time.perf_counter() - t0:.0f}s", flush=True)
            for quantize in ("none", "int8", "int4"):
                raw[(shape, quantize)] = r = run_measure(folder, args.dtype, quantize)
                print(f"[{shape}] {quantize}: {json.dumps(r)}", flush=True)
            shutil.rmtree(folder)
    result = {}
    for quantize in ("none", "int8", "int4"):
        one, two = raw[("pro7b-1L", quantize)], raw[("pro7b-2L", quantize)]
        est = {}
        for key in ("lm_device_mb", "lm_host_table_mb", "peak_growth_mb", "kept_mb"):
            per_layer = two[key] - one[key]
            est[key] = one[key] + (PRO7B_LAYERS - 1) * per_layer
            est[key + "_per_layer"] = per_layer
        est["staging_mb"] = two["staging_mb"]
        result[quantize] = {"measured_1L": one, "measured_2L": two, "extrapolated_30L": est}
        limit = 1.15 * est["kept_mb"] + est["staging_mb"]
        rows.append([quantize if quantize != "none" else f"none ({args.dtype})",
                     f"{est['lm_device_mb_per_layer']:.1f}", f"{est['lm_device_mb'] / 1024:.2f}",
                     f"{est['lm_host_table_mb'] / 1024:.2f}", f"{one['peak_growth_mb']:.0f} / {two['peak_growth_mb']:.0f}",
                     f"{est['peak_growth_mb'] / 1024:.2f}", f"{est['staging_mb']:.0f}", f"{limit / 1024:.2f}",
                     "yes" if est["peak_growth_mb"] <= limit else "no"])
    header = ("| quantize | on-device MiB per layer | generation model on the device, 30 layers, GiB | text table in host "
              "RAM GiB | load peak growth MiB, 1 / 2 layers (measured) | load peak growth, 30 layers, GiB | largest "
              "staging tensor MiB | 1.15 x kept + staging, GiB | peak within it |")
    md = [f"## Janus-Pro-7B dimensions, load dtype {args.dtype}, from {args.src_dtype} {args.fmt} (1- and 2-layer "
          f"checkpoints measured, extrapolated to {PRO7B_LAYERS} layers)", "", header,
          "|---|---|---|---|---|---|---|---|---|"]
    md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    print("\n".join(md))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
        Path(args.json).with_suffix(".md").write_text("\n".join(md) + "\n")
    return 0


def build(folder: Path, shape: str, layout: str, fmt: str, src_dtype: str) -> None:
    import torch

    from tests.tiny_checkpoint import build_hf_model, write_checkpoint

    model = build_hf_model(text=dict(SHAPES[shape], max_position_embeddings=4096) if SHAPES[shape] else None)
    write_checkpoint(model, folder, layout, fmt, 1, getattr(torch, src_dtype))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="mini")
    p.add_argument("--layout", choices=["transformers", "original"], default="original")
    p.add_argument("--fmt", choices=["safetensors", "bin"], default="safetensors")
    p.add_argument("--src-dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--quantize", default="none", choices=["none", "int8", "int4"])
    p.add_argument("--extrapolate", choices=["pro7b"], help="Janus-Pro-7B memory table from 1- and 2-layer checkpoints")
    p.add_argument("--measure", help=argparse.SUPPRESS)  # internal: measure an existing folder in this process
    p.add_argument("--generate", action="store_true", help="also time sampling one image (576 tokens) + decoding it")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.dtype, args.generate, args.quantize)))
        return 0
    if args.extrapolate:
        return extrapolate(args)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ckpt"
        build(folder, args.shape, args.layout, args.fmt, args.src_dtype)
        measured = run_measure(folder, args.dtype, args.quantize, args.generate)
    result = {"shape": args.shape, "layout": args.layout, "fmt": args.fmt, "src_dtype": args.src_dtype,
              "dtype": args.dtype, **measured}
    result["growth_over_kept"] = round(result["peak_growth_mb"] / result["kept_mb"], 3)
    print("| shape | file | src -> dtype | load s | file MB | kept MB | peak RSS growth MB | growth / kept |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.shape} | {args.layout} {args.fmt} | {args.src_dtype} -> {args.dtype} | {result['load_s']} | "
          f"{result['file_mb']:.0f} | {result['kept_mb']:.0f} | {result['peak_growth_mb']:.0f} | "
          f"{result['growth_over_kept']} |")
    if args.generate:
        print(f"one image on CPU (1 thread): sampling {result['sample_s']} s, VQ decode {result['decode_s']} s, "
              f"process peak RSS {result['peak_rss_total_mb']:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
