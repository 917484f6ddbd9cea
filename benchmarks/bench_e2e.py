"""End to end, from process start to a PNG on disk: the CLI against a script running transformers' own Janus.

    python benchmarks/bench_e2e.py                                   # mini, batch 1, greedy, fp32, both contenders
    python benchmarks/bench_e2e.py --shapes pro1b-4L --cli-variants float32,int8,bf16 --no-transformers

Each run is a fresh process, timed by the parent from spawn to exit (interpreter start, imports, loading the
checkpoint, 576 tokens, VQ decode, PNG write), with the processes of the contenders alternating and the order
rotated every repeat; medians are reported. Contenders, all on one random checkpoint (transformers layout,
written once by tests/tiny_checkpoint, as bench_sampler.py does):

- `cli-<variant>`: `python -m janus_core generate --temperature 0 --cfg 5` with `--dtype float32` (or the
  variant's `--dtype bfloat16` / `--quantize int8|int4`), `--save-tokens`;
- `transformers`: a script that imports transformers, `JanusForConditionalGeneration.from_pretrained`,
  `generate(generation_mode="image", do_sample=False, guidance_scale=5)`, `decode_image_tokens`, and writes the PNG.

In float32 the greedy tokens of the CLI and of transformers must be identical (exit 1 otherwise).
Thread count: whatever each process picks by default (the CLI tunes its token loop; transformers uses torch's
default), unless --threads is given (then both get it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, machine_info, machine_line, md_table, write_outputs

PROMPT = "a photo of a cat sitting on a red chair"
TRANSFORMERS_SCRIPT = r'''
import sys, torch
import numpy as np
from PIL import Image
from tokenizers import Tokenizer
from transformers import JanusForConditionalGeneration
folder, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
if threads:
    torch.set_num_threads(threads)
tok = Tokenizer.from_file(f"{folder}/tokenizer.json")
text = "<|User|>: " + sys.argv[4] + "\n\n<|Assistant|>:<begin_of_image>"
ids = tok.encode(text).ids
bos = tok.token_to_id("<｜begin▁of▁sentence｜>")
ids = ids if ids[0] == bos else [bos] + ids
model = JanusForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
gc = model.generation_config  # what the official repos' generation config holds (a saved one may lack the kwargs)
gc.pad_token_id, gc.bos_token_id = tok.token_to_id("<｜▁pad▁｜>"), bos
gc.generation_kwargs = {"boi_token_id": tok.token_to_id("<begin_of_image>")}
with torch.inference_mode():
    x = torch.tensor([ids])
    tokens = model.generate(x, attention_mask=torch.ones_like(x), generation_mode="image", do_sample=False,
                            guidance_scale=5.0)
    pixels = model.decode_image_tokens(tokens)
img = ((pixels[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().numpy()  # [H, W, 3] already
Image.fromarray(np.ascontiguousarray(img)).save(f"{out}/00000.png")
torch.save(tokens.cpu(), f"{out}/tokens.pt")
'''


def run_timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    elapsed = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return elapsed


def cli_command(folder: Path, out: Path, variant: str, threads: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "janus_core", "generate", "--model", str(folder), "--prompt", PROMPT, "--device",
           "cpu", "--temperature", "0", "--cfg", "5", "--output", str(out), "--save-tokens"]
    dtype = {"bf16": "bfloat16", "auto": "auto"}.get(variant, "float32")
    cmd += ["--dtype", dtype]
    if variant in ("int8", "int4"):
        cmd += ["--quantize", variant]
    if threads:
        cmd += ["--threads", str(threads)]
    return cmd


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="mini")
    p.add_argument("--cli-variants", default="float32", help="comma list of float32, bf16, int8, int4, auto")
    p.add_argument("--no-transformers", dest="transformers", action="store_false")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=str(RESULTS / "e2e.json"))
    args = p.parse_args(argv)
    from benchmarks.bench_sampler import build_checkpoint

    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    records = []
    with tempfile.TemporaryDirectory(prefix="janus_e2e_") as tmp:
        tmp = Path(tmp)
        script = tmp / "transformers_generate.py"
        script.write_text(TRANSFORMERS_SCRIPT)
        for shape in args.shapes.split(","):
            folder = build_checkpoint(shape, tmp / shape, "float32")
            contenders = [f"cli-{v}" for v in args.cli_variants.split(",")]
            if args.transformers:
                contenders.append("transformers")
            times: dict[str, list[float]] = {c: [] for c in contenders}
            tokens: dict[str, torch.Tensor] = {}
            for rep in range(args.repeats):
                order = contenders[rep % len(contenders):] + contenders[: rep % len(contenders)]
                for c in order:
                    out = tmp / f"out-{shape}-{c}-{rep}"
                    out.mkdir()
                    if c == "transformers":
                        cmd = [sys.executable, str(script), str(folder), str(out), str(args.threads or 0), PROMPT]
                    else:
                        cmd = cli_command(folder, out, c[len("cli-"):], args.threads)
                    times[c].append(run_timed(cmd, env))
                    assert (out / "00000.png").is_file()
                    if c == "transformers":
                        tokens[c] = torch.load(out / "tokens.pt").view(-1)
                    else:
                        from safetensors.torch import load_file

                        tokens[c] = load_file(str(out / "tokens.safetensors"))["tokens"].view(-1)
                    print(f"[{shape}] {c} run {rep + 1}: {times[c][-1]:.2f} s", flush=True)
            medians = {c: statistics.median(t) for c, t in times.items()}
            identical = None
            if "transformers" in tokens and "cli-float32" in tokens:
                identical = bool(torch.equal(tokens["transformers"], tokens["cli-float32"]))
            records.append({"shape": shape, "seconds": times, "median_s": medians, "tokens_identical": identical})
    machine = machine_info(torch)
    rows = []
    for r in records:
        ref = r["median_s"].get("transformers") or r["median_s"].get("cli-float32")
        for c, m in r["median_s"].items():
            rows.append([r["shape"], c, f"{m:.2f}", f"{ref / m:.2f}x"])
    base = "transformers" if args.transformers else "cli-float32"
    md = "\n".join([f"## End to end: process start to PNG (batch 1, greedy, cfg 5, 576 tokens, median of {args.repeats})",
                    "", machine_line(machine), "",
                    md_table(["shape", "contender", "seconds", f"speed vs {base}"], rows), "",
                    "Greedy tokens CLI fp32 == transformers: "
                    + ", ".join(f"{r['shape']} {r['tokens_identical']}" for r in records)])
    print("\n" + md)
    write_outputs(Path(args.json), {"benchmark": "e2e", "args": vars(args), "machine": machine, "results": records}, md)
    return 0 if all(r["tokens_identical"] in (None, True) for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
