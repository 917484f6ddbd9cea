"""The demo model's accuracy table, scored by the scene evaluator (training/evaluate.py, pixels only).

    python benchmarks/demo_accuracy.py                         # cfg 1/3/5/7, fp32, 24 captions x 4 seeds
    python benchmarks/demo_accuracy.py --cfg 5 --variants fp32,bf16,int8,int4 --seeds 4

- Generation: held-out captions of the grammar (scenes drawn from seeds the training pool never used, plus the
  README's example forms), `--seeds` images each, temperature 1; per check the share of images that pass:
  background colour, each named object's colour, each named position, each shape.
- Negative prompt: "a circle on a blue background" with and without the negative prompt "red": the share of
  images that show a red object.
- Understanding (greedy): held-out one-object scenes drawn by the renderer, "What colour is the background?" and
  "What shape is in the picture?"; the share of answers that name the right word.
- For the record: the mean entropy and top-1 probability of the image-token distribution at cfg 5 (the
  CFG-mixed distribution that chose each token).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "training"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from benchmarks.common import RESULTS, machine_info, machine_line, md_table, write_outputs  # noqa: E402

VARIANTS = {"fp32": ("float32", "none"), "bf16": ("bfloat16", "none"), "int8": ("float32", "int8"),
            "int4": ("float32", "int4")}
README_CAPTIONS = ["a red circle on a blue background", "a small yellow triangle at the top left on a black background",
                   "a green square and a white circle on a purple background"]
HELD_OUT = 10**6  # scene seeds from here on: the training pool used 0 .. pool size


def held_out_captions(n: int) -> list[str]:
    from scenes import caption, random_scene

    caps = list(README_CAPTIONS)
    i = 0
    while len(caps) < n:
        caps.append(caption(random_scene(random.Random(HELD_OUT + i))))
        i += 1
    return caps[:n]


def generate_scores(lm, vq, captions, seeds: int, cfg: float, batch: int, negative: str = "", decoding: str = "auto",
                    forwards: list | None = None, window: int | None = None):
    """Per check, the list of pass/fail over every image; and the images' pictures (for further checks). The
    forwards each batch took are appended to `forwards` (when given)."""
    from evaluate import score

    from janus_core import decode_tokens, prepare_cond, sample_tokens

    checks: dict[str, list[bool]] = {"background": [], "colour": [], "position": [], "shape": []}
    pictures = []
    for k, text in enumerate(captions):
        cond = prepare_cond(lm, text, negative_prompt=negative)
        for s0 in range(0, seeds, batch):
            n = min(batch, seeds - s0)
            tokens = sample_tokens(lm, cond, seed=1000 * k + s0, batch_size=n, cfg=cfg, temperature=1.0,
                                   decoding=decoding, window=window)
            if forwards is not None:
                forwards.append(tokens.settings["forwards"])
            for img in decode_tokens(vq, tokens):
                img = (img.numpy() * 255).round().astype("uint8")  # the evaluator reads 8-bit RGB, as a PNG holds
                pictures.append((text, img))
                for name, results in score(text, img).items():
                    checks[name].extend(results)
    return checks, pictures


def rate(values: list[bool]) -> str:
    return f"{100 * sum(values) / len(values):.0f} % ({sum(values)}/{len(values)})" if values else "-"


def understanding_scores(folder, count: int):
    from PIL import Image
    from scenes import random_scene, render

    from janus_core import describe, load_understanding
    from janus_core.loader import load_generator

    lm = load_generator(folder, dtype="float32", device="cpu")
    und = load_understanding(folder, dtype="float32", device="cpu")
    right = {"background": [], "shape": []}
    for i in range(count):
        scene = random_scene(random.Random(2 * HELD_OUT + i), objects=1)
        image = Image.fromarray(render(scene))
        bg = describe(lm, image, "What colour is the background?", max_new_tokens=8, understanding=und)[0]
        shape = describe(lm, image, "What shape is in the picture?", max_new_tokens=8, understanding=und)[0]
        right["background"].append(scene.background in bg.lower().split())
        right["shape"].append(scene.shapes[0].kind in shape.lower())
    return right


def distribution_record(lm, captions, cfg: float):
    """Mean entropy (nats) and top-1 probability of the CFG-mixed image-token distributions at `cfg`."""
    from janus_core import prepare_cond, sample_tokens
    from janus_core import sampler as sampler_mod

    entropies, tops = [], []
    real = sampler_mod._jacobi_finalised

    def record(n, a, logits):
        p = logits[:, :a].float().softmax(-1)
        entropies.append(float(-(p * p.clamp_min(1e-30).log()).sum(-1).mean()) * a)
        tops.append(float(p.max(-1).values.mean()) * a)
        return real(n, a, logits)

    sampler_mod._jacobi_finalised = record
    try:
        for k, text in enumerate(captions):
            sample_tokens(lm, prepare_cond(lm, text), seed=k, cfg=cfg, temperature=1.0, decoding="jacobi")
    finally:
        sampler_mod._jacobi_finalised = real
    total = 576 * len(captions)
    return sum(entropies) / total, sum(tops) / total


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo")
    p.add_argument("--captions", type=int, default=24)
    p.add_argument("--seeds", type=int, default=4, help="images per caption")
    p.add_argument("--cfg", default="1,3,5,7")
    p.add_argument("--variants", default="fp32", help="comma list of " + ", ".join(VARIANTS) + " (at cfg 5)")
    p.add_argument("--decodings", default="", help="comma list of lossy decodings also scored at cfg 5 in fp32 "
                   "(e.g. jacobi_grouped, zipar, zipar:12 for a window of 12), against the default's tokens")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--negative-seeds", type=int, default=16)
    p.add_argument("--understanding", type=int, default=40, help="held-out scenes asked about (0: skip)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=str(RESULTS / "demo_accuracy.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from janus_core import load
    from janus_core.hub import resolve_model

    folder = resolve_model(args.model)
    captions = held_out_captions(args.captions)
    t0 = time.perf_counter()
    record: dict = {"benchmark": "demo_accuracy", "args": vars(args), "machine": machine_info(torch), "rows": []}
    rows = []
    cfgs = [float(c) for c in args.cfg.split(",") if c]
    variants = [v for v in args.variants.split(",") if v]
    runs = ([("fp32", c, "auto") for c in cfgs] + [(v, 5.0, "auto") for v in variants if v != "fp32"]
            + [("fp32", 5.0, d) for d in args.decodings.split(",") if d])
    for variant, cfg, decoding in runs:
        dtype, quant = VARIANTS[variant]
        lm, vq = load(folder, dtype=dtype, device="cpu", vq_dtype="float32", quantize=quant)
        forwards: list[int] = []
        name, _, own = decoding.partition(":")
        checks, _ = generate_scores(lm, vq, captions, args.seeds, cfg, args.batch, decoding=name,
                                    forwards=forwards, window=int(own) if own else None)
        rec = {"variant": variant, "cfg": cfg, "decoding": decoding, "forwards": forwards} | {
            k: (sum(v), len(v)) for k, v in checks.items()}
        record["rows"].append(rec)
        label = variant if decoding == "auto" else f"{variant}, {decoding}"
        rows.append([label, f"{cfg:g}"] + [rate(checks[k]) for k in ("background", "colour", "position", "shape")]
                    + [f"{sum(forwards) / len(forwards):.0f}"])
        print(" | ".join(rows[-1]), f"({time.perf_counter() - t0:.0f} s)", flush=True)
    lm, vq = load(folder, dtype="float32", device="cpu", vq_dtype="float32")
    neg_prompt = ["a circle on a blue background"]
    plain, pics_plain = generate_scores(lm, vq, neg_prompt, args.negative_seeds, 5.0, args.batch)
    steered, pics_neg = generate_scores(lm, vq, neg_prompt, args.negative_seeds, 5.0, args.batch, negative="red")
    from evaluate import colour_present

    red_plain = [colour_present(img, "red") for _, img in pics_plain]
    red_neg = [colour_present(img, "red") for _, img in pics_neg]
    record["negative"] = {"without": (sum(red_plain), len(red_plain)), "with": (sum(red_neg), len(red_neg))}
    entropy, top1 = distribution_record(lm, captions[:4], 5.0)
    record["distribution_cfg5"] = {"entropy_nats": entropy, "top1_probability": top1}
    und = understanding_scores(folder, args.understanding) if args.understanding else None
    record["understanding"] = {k: (sum(v), len(v)) for k, v in und.items()} if und else None
    record["wall_s"] = time.perf_counter() - t0

    md = [f"## Demo model accuracy ({len(captions)} held-out captions x {args.seeds} seeds, temperature 1; "
          f"scored from pixels by training/evaluate.py)", "", machine_line(record["machine"]), "",
          md_table(["weights", "cfg", "background", "object colour", "position (named)", "shape",
                    f"forwards per batch of {min(args.batch, args.seeds)}"], rows), "",
          f"Negative prompt: \"{neg_prompt[0]}\", cfg 5, {args.negative_seeds} seeds: a red object in "
          f"{rate(red_plain)} of images without the negative prompt \"red\", {rate(red_neg)} with it.", "",
          f"Image-token distribution at cfg 5 (fp32, {min(4, len(captions))} captions): mean entropy {entropy:.2f} nats, "
          f"mean top-1 probability {top1:.2f}."]
    if und:
        md += ["", f"Understanding (greedy, {args.understanding} held-out one-object scenes): background colour "
               f"right in {rate(und['background'])}, shape in {rate(und['shape'])}."]
    text = "\n".join(md)
    print("\n" + text)
    write_outputs(Path(args.json), record, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
