"""Time and peak resident memory of loading a checkpoint for generation, against the bytes actually kept.

    python benchmarks/bench_load.py --shape mini --src-dtype float32 --dtype bfloat16 --fmt safetensors

Builds a random checkpoint (transformers' Janus, written in the chosen layout/format) in a temp folder, then
loads it in a fresh subprocess and reports: load seconds, peak RSS growth during the load (VmHWM after minus
VmRSS before, from /proc/self/status), and the bytes of the tensors kept (LM for generation + VQ decoder).
The checkpoint also holds an LM head, a vision tower and the VQ encoder, which a generation load skips.
"""

from __future__ import annotations

import argparse
import json
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
}  # fmt: skip


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def measure(folder: str, dtype: str, generate: bool) -> dict:
    import torch

    from janus_core import decode_tokens, load, prepare_cond, sample_tokens

    torch.set_num_threads(1)
    before = _status("VmRSS")
    t0 = time.perf_counter()
    lm, vq = load(folder, dtype=dtype, device="cpu")
    seconds = time.perf_counter() - t0
    peak = _status("VmHWM")
    kept = sum(p.numel() * p.element_size() for m in (lm.model, vq.model) for p in m.parameters())
    files = sum(f.stat().st_size for f in Path(folder).iterdir() if f.suffix in (".safetensors", ".bin"))
    out = {"load_s": round(seconds, 3), "rss_before_mb": before / 2**20, "peak_growth_mb": (peak - before) / 2**20,
           "kept_mb": kept / 2**20, "file_mb": files / 2**20}
    if generate:  # one image, 576 tokens + VQ decode, 1 thread
        t0 = time.perf_counter()
        tokens = sample_tokens(lm, prepare_cond(lm, "a photo of a cat"), seed=0)
        out["sample_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        decode_tokens(vq, tokens)
        out["decode_s"] = round(time.perf_counter() - t0, 3)
        out["peak_rss_total_mb"] = _status("VmHWM") / 2**20
    return out


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
    p.add_argument("--measure", help=argparse.SUPPRESS)  # internal: measure an existing folder in this process
    p.add_argument("--generate", action="store_true", help="also time sampling one image (576 tokens) + decoding it")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.dtype, args.generate)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ckpt"
        build(folder, args.shape, args.layout, args.fmt, args.src_dtype)
        cmd = [sys.executable, __file__, "--measure", str(folder), "--dtype", args.dtype]
        out = subprocess.run(cmd + (["--generate"] if args.generate else []), check=True, capture_output=True,
                             text=True).stdout
    result = {"shape": args.shape, "layout": args.layout, "fmt": args.fmt, "src_dtype": args.src_dtype,
              "dtype": args.dtype, **json.loads(out.strip().splitlines()[-1])}
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
