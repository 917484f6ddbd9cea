"""What weight-only quantization costs in fidelity: each quantized model's next-token distribution against fp32.

    python benchmarks/quant_fidelity.py --shape mini
    python benchmarks/quant_fidelity.py --shape pro1b-4L --variants bf16,int8,int4 --int4-groups 32,64,128
    python benchmarks/quant_fidelity.py --model demo          # the bundled demo model: a model with structure

Random weights (no download), spread like trained ones as tests/tiny_checkpoint.build_hf_model draws them:
every matrix N(0, 1/fan_in) (unit-variance activations through every layer, as in a trained Llama), biases
N(0, 0.02), norm weights 1 + N(0, 0.05). One checkpoint is written and every variant loads that same folder.

Teacher forcing: the fp32 model samples one image (576 tokens, seed 0, temperature 1, cfg 5); every variant then
reads that same prompt + token stream in one pass (cond and uncond rows), and at each of the 576 steps the
CFG-mixed next-token distribution (softmax of uncond + 5 (cond - uncond)) is compared with fp32's: KL(fp32 || q)
mean and max over the steps, top-1 agreement (same argmax), and the largest absolute error of the mixed logits
(with the fp32 logits' spread for scale). Separately each variant samples greedily on its own and the first
token where its stream parts from fp32's greedy stream is reported (a greedy stream that parts once is then
conditioned on different tokens, so later tokens are not compared).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_sampler import COMMON_TEXT, SHAPES, SMALL_VQ  # noqa: E402
from benchmarks.common import RESULTS, machine_info, md_table, write_outputs  # noqa: E402

VARIANTS = {"bf16": ("bfloat16", "none"), "int8": ("float32", "int8"), "int4": ("float32", "int4"),
            "int8@bf16": ("bfloat16", "int8"), "int4@bf16": ("bfloat16", "int4")}
PROMPT = "a photo of a cat sitting on a red chair"
DEMO_PROMPT = "a red circle on a blue background"
CFG = 5.0


def teacher_forced_logits(lm, cond, tokens):
    """CFG-mixed logits [576, V] (float32) for every step of `tokens` [576], in one pass over prompt + tokens."""
    import torch

    from janus_core.model import KVCache, rope_tables
    from janus_core.sampling import cfg_mix

    m = lm.model
    ids = torch.tensor([cond.cond_ids, cond.uncond_ids])  # same length: the uncond row replaces ids by pad
    with torch.inference_mode():
        x = torch.cat([m.embed_text(ids), m.image_token_embeds(tokens[None].repeat(2, 1))[:, :-1]], dim=1)
        t = x.shape[1]
        cos, sin = (a[None, None] for a in rope_tables(m.cfg, torch.arange(t), lm.dtype))
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        cache = KVCache(m.cfg, 2, t, "cpu", lm.dtype)
        hidden = m.forward_hidden(x, cos, sin, cache, 0, mask)[:, ids.shape[1] - 1 :]  # [2, 576, H]
        cache.release()
        out = []
        for s0 in range(0, hidden.shape[1], 64):
            logits = m.image_logits(hidden[:, s0 : s0 + 64]).float()  # [2, n, V]
            out.append(cfg_mix(logits.transpose(0, 1).reshape(-1, logits.shape[-1]), logits.shape[1], CFG))
        return torch.cat(out)


def compare(ref_logits, logits) -> dict:
    import torch

    ref_lp, lp = ref_logits.log_softmax(-1), logits.log_softmax(-1)
    kl = (ref_lp.exp() * (ref_lp - lp)).sum(-1)
    return {"kl_mean": float(kl.mean()), "kl_max": float(kl.max()),
            "top1_agreement": float((ref_logits.argmax(-1) == logits.argmax(-1)).float().mean()),
            "max_logit_error": float((ref_logits - logits).abs().max()),
            "mean_logit_error": float((ref_logits - logits).abs().mean()),
            "ref_logit_std": float(ref_logits.std()),
            "ref_entropy_mean": float(-(ref_lp.exp() * ref_lp).sum(-1).mean())} | (
        {} if torch.isfinite(kl).all() else {"non_finite": True})


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="mini", choices=[s for s in SHAPES if s not in ("pro1b", "pro7b")])
    p.add_argument("--model", default=None, help="a checkpoint folder or 'demo' instead of random --shape weights")
    p.add_argument("--prompt", default=None, help=f"default: {PROMPT!r} ({DEMO_PROMPT!r} with --model)")
    p.add_argument("--variants", default="bf16,int8,int4", help="comma list of " + ", ".join(VARIANTS))
    p.add_argument("--int4-groups", default="", help="also int4 with these group sizes (comma list), e.g. 32,64,128")
    p.add_argument("--head-scale", type=float, default=1.0,
                   help="multiply the generation head's output layer by this (sharper next-token distributions: a "
                        "sensitivity check, since random weights give flatter ones than a trained model may)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from janus_core import load_generator, prepare_cond, quantize, sample_tokens
    from tests.tiny_checkpoint import build_hf_model, write_checkpoint

    t_start = time.perf_counter()
    runs = [(v, *VARIANTS[v], None) for v in args.variants.split(",") if v]
    runs += [(f"int4 g{g}", "float32", "int4", int(g)) for g in args.int4_groups.split(",") if g]
    results = []
    prompt = args.prompt or (DEMO_PROMPT if args.model else PROMPT)
    label = args.model or args.shape
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            from janus_core.hub import resolve_model

            folder = resolve_model(args.model)
        else:
            folder = Path(tmp) / args.shape
            hf = build_hf_model(text={**SHAPES[args.shape], **COMMON_TEXT}, vq=SMALL_VQ, seed=0)
            with torch.no_grad():
                hf.model.generation_head.vision_head.weight.mul_(args.head_scale)
                hf.model.generation_head.vision_head.bias.mul_(args.head_scale)
            write_checkpoint(hf, folder)
            del hf
        ref = load_generator(folder, dtype="float32", device="cpu")
        ref_vocab = ref.model.image_vocab
        cond = prepare_cond(ref, prompt)
        teacher = sample_tokens(ref, cond, seed=0, temperature=1.0, cfg=CFG).tokens.reshape(-1)
        greedy_ref = sample_tokens(ref, cond, seed=0, temperature=0, cfg=CFG).tokens.reshape(-1)
        ref_logits = teacher_forced_logits(ref, cond, teacher)
        check = compare(ref_logits, ref_logits)  # the reference's own spread and entropy
        print(f"[{label}] fp32 reference ready ({time.perf_counter() - t_start:.0f}s); logit std "
              f"{check['ref_logit_std']:.2f}, mean entropy {check['ref_entropy_mean']:.2f} nats", flush=True)
        del ref
        default_group = quantize.INT4_GROUP
        for name, dtype, qmode, group in runs:
            quantize.INT4_GROUP = group or default_group
            try:
                lm = load_generator(folder, dtype=dtype, device="cpu", quantize=qmode)
                rec = {"variant": name, "dtype": dtype, "quantize": qmode,
                       "int4_group": quantize.INT4_GROUP if qmode == "int4" else None}
                rec.update(compare(ref_logits, teacher_forced_logits(lm, cond, teacher)))
                greedy = sample_tokens(lm, cond, seed=0, temperature=0, cfg=CFG).tokens.reshape(-1)
                parted = (greedy != greedy_ref).nonzero()
                rec["greedy_first_divergence"] = int(parted[0]) if len(parted) else None
                rec["weights_bytes"] = sum(p.numel() * p.element_size() for p in lm.model.parameters())
            finally:
                quantize.INT4_GROUP = default_group
            results.append(rec)
            print(f"[{label}] {name}: KL mean {rec['kl_mean']:.5f} max {rec['kl_max']:.4f}, top-1 "
                  f"{100 * rec['top1_agreement']:.1f} %, max logit error {rec['max_logit_error']:.3f}, greedy parts "
                  f"at {rec['greedy_first_divergence']}", flush=True)
            del lm

    headers = ["variant", "activations", "int4 group", "KL mean (nats)", "KL max", "top-1 agreement",
               "max / mean abs logit error", "greedy stream parts from fp32 at token", "weights MiB"]
    rows = [[r["variant"], r["dtype"], r["int4_group"] or "", f"{r['kl_mean']:.5f}", f"{r['kl_max']:.4f}",
             f"{100 * r['top1_agreement']:.1f} %", f"{r['max_logit_error']:.3f} / {r['mean_logit_error']:.4f}",
             "never (576 equal)" if r["greedy_first_divergence"] is None else r["greedy_first_divergence"],
             f"{r['weights_bytes'] / 2**20:.1f}"] for r in results]
    md = "\n".join([
        (f"## Quantization fidelity ({args.model}, trained weights, prompt {prompt!r}" if args.model else
         f"## Quantization fidelity ({args.shape}, random weights N(0, 1/fan_in)"
         f"{f', head output x {args.head_scale:g}' if args.head_scale != 1 else ''}") + f", teacher-forced over 576 "
        f"tokens, cfg {CFG}; {machine_info(torch).get('cpu', '')})", "",
        f"fp32 reference: CFG-mixed logit std {check['ref_logit_std']:.2f}, mean entropy "
        f"{check['ref_entropy_mean']:.2f} nats (of {math.log(ref_vocab):.2f} for uniform).", "", md_table(headers, rows)])
    print("\n" + md)
    suffix = f"_head{args.head_scale:g}" if args.head_scale != 1 else ""
    json_path = Path(args.json or RESULTS / f"quant_fidelity_{Path(label).name}{suffix}.json")
    write_outputs(json_path, {"benchmark": "quant_fidelity", "args": vars(args), "machine": machine_info(torch),
                              "reference": check, "results": results,
                              "wall_s": time.perf_counter() - t_start}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
