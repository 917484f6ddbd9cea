"""Image-understanding benchmark: janus_core.describe vs transformers' Janus `generate(generation_mode="text")`.

Random weights (no download): for every shape a transformers `JanusForConditionalGeneration` is built with
random weights (tests/tiny_checkpoint.build_hf_model) and a SigLIP-shaped tower (default: the released
SigLIP-L/16@384, 24 blocks, width 1024), written once as a checkpoint folder that janus_core loads, so both
contenders run on identical weights, in one process, alternately (the order flips every repeat); medians
are reported. Three timings per contender:

  encode     image -> aligned features [1, 576, H]: `UnderstandingModel.image_features` vs
             `JanusModel.get_image_features(...).pooler_output` (same pixels; features checked within 1e-4)
  prefill    the LLM over the prompt embeddings into an empty cache: `forward_hidden` into a KVCache vs
             transformers' `language_model(inputs_embeds=..., use_cache=True)`
  per token  ms per generated text token, from timestamps taken after every token inside full greedy
             generations of N tokens ((t_N - t_1) / (N - 1); janus_core's progress callback, transformers'
             stopping-criteria hook), so it is the steady decode step: embed, LLM step, lm_head, argmax

The greedy token streams must be identical (exit 1 otherwise).

    python benchmarks/bench_describe.py                              # CPU fp32, mini + pro1b-4L, batch 1
    python benchmarks/bench_describe.py --shapes tiny --vision tiny --tokens 4 --repeats 1   # smoke
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_sampler import COMMON_TEXT, SHAPES, SMALL_VQ  # noqa: E402
from benchmarks.common import RESULTS, machine_info, md_table, write_outputs  # noqa: E402

VISION = {  # the tower: released SigLIP-L/16@384, or the test suite's narrow one
    "siglip-l": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16},
    "tiny": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2},
}
QUESTION = "Describe this image in detail."


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


class _Stamps:
    """Records a timestamp per generated token (transformers stopping-criteria / janus_core progress hook)."""

    def __init__(self):
        self.t = []

    def __call__(self, *args, **kwargs):
        self.t.append(time.perf_counter())
        import torch

        ids = args[0] if args and hasattr(args[0], "shape") else None
        return torch.zeros(ids.shape[0], dtype=torch.bool) if ids is not None else None

    def per_token_ms(self) -> float:
        return 1000 * (self.t[-1] - self.t[0]) / (len(self.t) - 1) if len(self.t) > 1 else float("nan")


def run_shape(shape: str, vision: str, n_tokens: int, repeats: int, workdir: Path) -> dict:
    import torch
    from transformers import StoppingCriteriaList

    from janus_core import load_generator, load_understanding
    from janus_core.model import KVCache
    from janus_core.sampler import position_tables
    from janus_core.understand import answer_ids, preprocess_images, understanding_prompt_ids
    from tests.tiny_checkpoint import build_hf_model, write_checkpoint

    text = {**SHAPES[shape], **COMMON_TEXT}
    t0 = time.perf_counter()
    hf = build_hf_model(text=text, vq=SMALL_VQ, vision=VISION[vision])
    folder = write_checkpoint(hf, workdir / shape)
    lm = load_generator(folder, dtype="float32", device="cpu")
    und = load_understanding(folder, dtype="float32", device="cpu")
    hf.config.image_token_id = lm.tokenizer.tok.token_to_id("<image_placeholder>")
    setup_s = time.perf_counter() - t0
    image = torch.rand(1, 300, 400, 3, generator=torch.Generator().manual_seed(0))
    pixels = preprocess_images(image, und.preprocess)
    prompt = understanding_prompt_ids(lm, QUESTION, und.model.cfg.num_positions)
    ids = torch.tensor([prompt])
    eos = lm.tokenizer.tok.token_to_id("<｜end▁of▁sentence｜>")
    times = {k: {"ours": [], "transformers": []} for k in ("encode_s", "prefill_s", "per_token_ms", "total_s")}
    streams: dict = {}

    def ours_encode():
        return und.model.image_features(pixels)

    def hf_encode():
        return hf.model.get_image_features(pixels).pooler_output

    with torch.inference_mode():
        feats = ours_encode()
        max_feature_diff = float((feats - hf_encode()).abs().max())
        embeds = lm.model.embed_text(ids)
        embeds[ids == hf.config.image_token_id] = feats.reshape(-1, feats.shape[-1])
    cfg = lm.model.cfg

    def ours_prefill():
        cache = KVCache(cfg, 1, ids.shape[1], "cpu", torch.float32)
        cos, sin, _, mask = position_tables(cfg, None, ids.shape[1], ids.shape[1], "cpu", torch.float32)
        lm.model.forward_hidden(embeds, cos, sin, cache, 0, mask)
        cache.release()

    def hf_prefill():
        hf.model.language_model(inputs_embeds=embeds, use_cache=True)

    def ours_generate():
        stamps = _Stamps()
        out = answer_ids(lm, image, QUESTION, max_new_tokens=n_tokens, understanding=und,
                         progress=lambda *a: stamps())
        return out[0], stamps

    def hf_generate():
        stamps = _Stamps()
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), pixel_values=pixels, generation_mode="text",
                          do_sample=False, max_new_tokens=n_tokens, stopping_criteria=StoppingCriteriaList([stamps]))
        row = out[0, ids.shape[1]:].tolist()
        return (row[: row.index(eos)] if eos in row else row), stamps

    contenders = {"ours": (ours_encode, ours_prefill, ours_generate), "transformers": (hf_encode, hf_prefill, hf_generate)}
    for rep in range(repeats + 1):  # repeat 0 warms up (allocator, first-call paths) and is not counted
        order = list(contenders) if rep % 2 == 0 else list(reversed(contenders))
        for name in order:
            encode, prefill, generate = contenders[name]
            with torch.inference_mode():
                gc.collect()
                t = time.perf_counter()
                encode()
                enc = time.perf_counter() - t
                t = time.perf_counter()
                prefill()
                pre = time.perf_counter() - t
            gc.collect()
            t = time.perf_counter()
            tokens, stamps = generate()
            total = time.perf_counter() - t
            streams[name] = tokens
            if rep:
                times["encode_s"][name].append(enc)
                times["prefill_s"][name].append(pre)
                times["per_token_ms"][name].append(stamps.per_token_ms())
                times["total_s"][name].append(total)
    med = {k: {n: _median(v) for n, v in d.items()} for k, d in times.items()}
    return {"shape": shape, "vision": vision, "text": text, "vision_config": VISION[vision], "tokens": n_tokens,
            "generated": len(streams["ours"]), "prompt_len": len(prompt), "setup_s": setup_s,
            "tokens_identical": streams["ours"] == streams["transformers"], "max_feature_diff": max_feature_diff,
            "median": med, "runs": times}


def markdown(results: list[dict], info: dict, args) -> str:
    rows = []
    for r in results:
        m = r["median"]
        speed = {k: m[k]["transformers"] / m[k]["ours"] for k in m}
        rows.append([f"{r['shape']} + {r['vision']}", f"{r['generated']}/{r['tokens']}",
                     f"{m['encode_s']['ours']:.3f} / {m['encode_s']['transformers']:.3f} ({speed['encode_s']:.2f}x)",
                     f"{m['prefill_s']['ours']:.3f} / {m['prefill_s']['transformers']:.3f} ({speed['prefill_s']:.2f}x)",
                     f"{m['per_token_ms']['ours']:.1f} / {m['per_token_ms']['transformers']:.1f} "
                     f"(**{speed['per_token_ms']:.2f}x**)",
                     f"{m['total_s']['ours']:.2f} / {m['total_s']['transformers']:.2f}",
                     "yes" if r["tokens_identical"] else "NO", f"{r['max_feature_diff']:.1e}"])
    head = (f"## Describe benchmark (CPU float32, batch 1, {args.repeats} repeats after a warm-up, medians)\n\n"
            f"{info.get('cpu', '?')}, {info['cpu_count']} cores, torch {info['torch']} ({info['torch_default_threads']} "
            f"threads), transformers {info.get('transformers', '?')}, git {info.get('git_head', '?')}.\n"
            "Each cell: janus_core / transformers (speed-up). encode = tower + aligner for one image; prefill = the "
            "LLM over the prompt; per token = steady decode step.\n\n")
    return head + md_table(["shape", "tokens", "encode s", "prefill s", "ms / text token", "total s",
                            "same greedy tokens", "feature max diff"], rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="mini,pro1b-4L")
    p.add_argument("--vision", default="siglip-l", choices=sorted(VISION))
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--json", default=str(RESULTS / "describe_cpu_float32.json"))
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_describe_") as tmp:
        for shape in args.shapes.split(","):
            print(f"{shape} + {args.vision} ...", file=sys.stderr)
            results.append(run_shape(shape, args.vision, args.tokens, args.repeats, Path(tmp)))
    info = machine_info(torch)
    md = markdown(results, info, args)
    print(md)
    write_outputs(Path(args.json), {"machine": info, "args": vars(args), "results": results}, md)
    return 0 if all(r["tokens_identical"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
