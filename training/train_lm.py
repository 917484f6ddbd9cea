"""Stage 2 of the demo model: the language model (both halves) and the understanding tower, on drawn scenes.

    python training/train_lm.py --vq training/runs/vq/checkpoint.pt --out training/runs/lm   # resumes

1. The token pool: `--pool` scenes drawn from fixed seeds, encoded by the stage-1 VQ encoder (janus_core's own
   `encode_pixels`, the path `encode` runs), in shards of 500 written as they are made (a stopped run keeps them).
2. Training, each step on both halves:
   - text-to-image: the prompt template with the scene's caption (a part of it one time in five, the
     unconditional row of the sampler - BOS, pads, `<begin_of_image>` - one time in ten: what makes CFG work),
     then the scene's 576 tokens, the loss on the tokens (generation head);
   - understanding: a fresh scene through the official preprocessing and the tower + aligner into the
     understanding prompt, a question about it, the loss on the answer (text head).
   Prompts are made by janus_core's own functions (render_prompt, understanding_prompt_ids), so training sees
   the token ids inference makes.

`--understanding-only --init <folder>` trains the understanding half alone (tower, aligner, text head) against
the folder's frozen generator: a retrained tower cannot change a single generated token. With `--shape-warmup N`
its first N steps teach the tower the shapes directly (see ShapeProbe), then `--shape-aux` keeps that loss on.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from common import (Progress, add_amp_argument, load_checkpoint, pick_device, save_checkpoint, set_threads,  # noqa: I001
                    step_rng, use_amp)
from arch import LMArch, VQArch, VisionArch, build_lm, build_understanding, build_vq, parameter_count
from scenes import SHAPES, TEXTURES, question_answers, random_scene, render
from text import EOS, build_tokenizer, training_caption

from janus_core.model import KVCache, rope_tables
from janus_core.prompt import PromptTokenizer, render_prompt
from janus_core.understand import preprocess_image, understanding_prompt_ids
from janus_core.vision import ImagePreprocess

SHARD = 500
GRID_TOKENS = 576
UNCOND_RATE = 0.1


# ---- the token pool ----------------------------------------------------------------------------------------------

def scene_of(seed: int, index: int):
    return random_scene(random.Random(seed * 7_919 + index))


def load_vq(path: Path, device):
    if path.is_dir():  # an exported folder (the bundled demo model): its VQ, encoder included
        from export import read_folder

        bundle = read_folder(path)
        return bundle.vq.to(device).eval(), bundle.vq_arch
    state = load_checkpoint(path)
    if state is None:
        raise SystemExit(f"no VQ checkpoint at {path}: run training/train_vq.py first")
    arch = VQArch(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["arch"].items()})
    vq = build_vq(arch)
    vq.load_state_dict(state["model"])
    return vq.to(device).eval(), arch


@torch.inference_mode()
def build_pool(vq, out: Path, size: int, seed: int, device, amp: bool, texture: str = "smooth") -> torch.Tensor:
    """int16 [size, 576] tokens of scenes 0..size-1 (resumable: finished shards are kept).

    Encoded under bf16 autocast when `amp` (4x faster on a CPU with native bf16 products, 6x slower without):
    about a third of the codes then differ from an fp32 encode, always for a near-duplicate code that decodes to
    nearly the same pixels."""
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    progress = Progress("pool", size, every=SHARD)
    for s0 in range(0, size, SHARD):
        path = out / f"shard_{s0 // SHARD:05d}.pt"
        n = min(SHARD, size - s0)
        state = load_checkpoint(path)
        if (state is None or state["tokens"].shape[0] != n or state["seed"] != seed
                or state.get("texture", "smooth") != texture):
            tokens = torch.empty((n, GRID_TOKENS), dtype=torch.int16)
            for b0 in range(0, n, 8):
                imgs = [render(scene_of(seed, s0 + i), texture) for i in range(b0, min(n, b0 + 8))]
                pixels = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    codes = vq.encode_pixels(pixels)
                tokens[b0 : b0 + len(imgs)] = codes.reshape(len(imgs), -1).to(torch.int16).cpu()
                progress(s0 + b0 + len(imgs))
            save_checkpoint(path, {"tokens": tokens, "seed": seed, "texture": texture})
            state = {"tokens": tokens}
        shards.append(state["tokens"])
    return torch.cat(shards)


# ---- batches -------------------------------------------------------------------------------------------------

class Texts:
    """Prompt ids exactly as janus_core makes them (its tokenizer wrapper and templates)."""

    def __init__(self, tokenizer_path: Path):
        self.tok = PromptTokenizer(tokenizer_path)
        self.eos = self.tok.tok.token_to_id(EOS)
        self.shim = SimpleNamespace(tokenizer=self.tok, prompt_format="pro", identity=SimpleNamespace(name="demo"))

    def generation(self, text: str, uncond: bool) -> list[int]:
        ids = self.tok.encode(render_prompt(text, "pro"))
        if uncond:  # the sampler's unconditional row for an empty negative prompt
            ids = [ids[0]] + [self.tok.pad_id] * (len(ids) - 2) + [ids[-1]]
        return ids

    def understanding(self, question: str, image_tokens: int) -> list[int]:
        return understanding_prompt_ids(self.shim, question, image_tokens)

    def answer(self, text: str) -> list[int]:
        return self.tok.tok.encode(text, add_special_tokens=False).ids + [self.eos]


def generation_batch(rng: random.Random, pool: torch.Tensor, seed: int, texts: Texts, batch: int):
    rows = []
    for _ in range(batch):
        k = rng.randrange(pool.shape[0])
        scene = scene_of(seed, k)
        uncond = rng.random() < UNCOND_RATE
        rows.append((texts.generation(training_caption(scene, rng), uncond), pool[k].long()))
    return rows


def shape_label(scene) -> int:
    """The index in SHAPES of a one-object scene's shape; -100 (ignored) for two objects."""
    return SHAPES.index(scene.shapes[0].kind) if len(scene.shapes) == 1 else -100


def understanding_batch(rng: random.Random, texts: Texts, batch: int, prep: ImagePreprocess, n_image: int,
                        texture: str = "smooth", labels: list | None = None):
    """(prompt, answer) rows and pixels [B, 3, S, S]; `labels`, when given, gets each scene's shape_label."""
    rows, pixels = [], []
    for _ in range(batch):
        scene = random_scene(rng)
        question, answer = rng.choice(question_answers(scene))
        rows.append((texts.understanding(question, n_image), texts.answer(answer)))
        if labels is not None:
            labels.append(shape_label(scene))
        from PIL import Image

        # with a "thirds" pool, both textures: understanding must read any renderer's scenes
        drawn = render(scene, rng.choice(TEXTURES) if texture != "smooth" else "smooth")
        pixels.append(preprocess_image(Image.fromarray(drawn), prep))
    return rows, torch.stack(pixels)


class ShapeProbe(torch.nn.Module):
    """A training-only head (never exported): one attention-pooling query over the tower's aligned features, then
    a linear layer to the three shapes.

    Why: through the language model the tower hears about shape only from the few answer tokens that name one,
    and measured here that was not enough (the bundled tower answers "a triangle" for most shapes; an attention
    probe on its frozen features finds the shape in 35 % of held-out scenes, chance 33 %). Trained on the
    shape directly, the same tower reached 70 % in 1000 steps of 32 scenes."""

    def __init__(self, hidden: int):
        super().__init__()
        self.query = torch.nn.Parameter(torch.randn(hidden) * 0.02)
        self.key = torch.nn.Linear(hidden, hidden)
        self.out = torch.nn.Linear(hidden, len(SHAPES))

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # [B, N, H] -> logits [B, 3]
        weights = (self.key(features) @ self.query).softmax(-1)
        return self.out((weights[..., None] * features).sum(1))


class ShapeScenes:
    """`count` one-object scenes drawn once (uint8, in memory): drawing 32 a step would cost more than the step."""

    def __init__(self, seed: int, count: int):
        scenes = [random_scene(random.Random(seed * 7_919 + 5_000_000 + i), objects=1) for i in range(count)]
        self.pixels = torch.from_numpy(np.stack([render(s) for s in scenes])).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.tensor([shape_label(s) for s in scenes])

    def batch(self, rng: random.Random, size: int):
        idx = torch.tensor([rng.randrange(len(self.labels)) for _ in range(size)])
        # what preprocess_image makes of a 384 px RGB picture: x / 255, then (x - 0.5) / 0.5
        return self.pixels[idx].float().div(255.0).sub(0.5).div(0.5), self.labels[idx]


def run_decoder(lm, x: torch.Tensor) -> torch.Tensor:
    """Hidden states of inputs x [B, T, H] from position 0, causal (janus_core's decoder, SDPA's causal kernel)."""
    b, t, _ = x.shape
    cache = KVCache(lm.cfg, b, t, x.device, x.dtype)
    cos, sin = (u[None, None] for u in rope_tables(lm.cfg, torch.arange(t, device=x.device), x.dtype))
    return lm.forward_hidden(x, cos, sin, cache, 0, "causal")


def token_weights(targets: torch.Tensor, codebook: torch.Tensor, first: float, edge: float) -> torch.Tensor:
    """Per-token loss weights [B, 576]: the tokens the caption decides, not the copies of a neighbour.

    Next-token training on drawn scenes is dominated by tokens equal (up to a near-duplicate code) to the one on
    their left or above; only the first token (the background) and the tokens where an object begins depend on
    the text, so with equal weights the text is ~0.2 % of the loss and conditioning is learnt last. Measured
    here: at step 1300 of uniform weights the first-token distribution was the same for every caption. So the
    first token weighs `first`, and a token whose code vector differs from both its left and upper neighbours'
    (cosine < 0.8) weighs `1 + edge`."""
    b = targets.shape[0]
    grid = targets.view(b, 24, 24)
    vec = F.normalize(codebook[grid], dim=-1)  # [B, 24, 24, D]
    left = torch.ones(b, 24, 24, device=targets.device)
    left[:, :, 1:] = (vec[:, :, 1:] * vec[:, :, :-1]).sum(-1)
    up = torch.ones(b, 24, 24, device=targets.device)
    up[:, 1:] = (vec[:, 1:] * vec[:, :-1]).sum(-1)
    w = 1 + edge * ((left < 0.8) & (up < 0.8)).float()
    w = w.view(b, -1)
    w[:, 0] = first
    return w


def generation_loss(lm, rows, device, weights=None) -> torch.Tensor:
    hidden_size = lm.cfg.hidden_size
    longest = max(len(p) for p, _ in rows)
    t = longest + GRID_TOKENS - 1
    x = torch.zeros((len(rows), t, hidden_size), device=device)
    targets = torch.stack([tok for _, tok in rows]).to(device)
    picks = torch.empty((len(rows), GRID_TOKENS), dtype=torch.long, device=device)
    for r, (prompt, _) in enumerate(rows):
        p = len(prompt)
        x[r, :p] = lm.embed_text(torch.tensor(prompt, device=device)).float()
        picks[r] = torch.arange(p - 1, p - 1 + GRID_TOKENS, device=device)
    # rows are right-padded with zeros: the causal mask keeps the padding out of every real position
    images = lm.image_token_embeds(targets[:, :-1])
    for r, (prompt, _) in enumerate(rows):
        x[r, len(prompt) : len(prompt) + GRID_TOKENS - 1] = images[r].float()
    hidden = run_decoder(lm, x)
    hidden = hidden.gather(1, picks[..., None].expand(-1, -1, hidden_size))
    logits = lm.image_logits(hidden).float()
    if weights is None:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    w = weights(targets)
    per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return (per_token * w.reshape(-1)).sum() / w.sum()


def understanding_loss(lm, und, rows, pixels, image_id: int, device, probe=None, labels=None,
                       aux_weight: float = 0.0) -> torch.Tensor:
    """The answer tokens' loss; plus, with a ShapeProbe and a weight, its shape loss on the one-object scenes."""
    hidden_size = lm.cfg.hidden_size
    seqs = [prompt + answer for prompt, answer in rows]
    t = max(len(s) for s in seqs) - 1
    ids = torch.zeros((len(rows), t), dtype=torch.long, device=device)
    targets = torch.full((len(rows), t), -100, dtype=torch.long, device=device)
    for r, (prompt, answer) in enumerate(rows):
        seq = torch.tensor(prompt + answer, device=device)
        ids[r, : len(seq) - 1] = seq[:-1]
        targets[r, len(prompt) - 1 : len(seq) - 1] = seq[len(prompt) :]
    x = lm.embed_text(ids).float()
    features = und.image_features(pixels.to(device)).float()  # [B, N, H]
    mask = ids == image_id
    x = x.masked_scatter(mask[..., None].expand(-1, -1, hidden_size), features.reshape(-1, hidden_size))
    hidden = run_decoder(lm, x)
    logits = und.text_logits(hidden).float()
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
    if probe is not None and aux_weight > 0 and any(k >= 0 for k in labels):
        shapes = torch.tensor(labels, device=device)
        loss = loss + aux_weight * F.cross_entropy(probe(features).float(), shapes, ignore_index=-100)
    return loss


def learning_rate(step: int, args) -> float:
    """Constant (after a short ramp) through the shape warm-up, then a ramp and cosine over the remaining steps."""
    warmup = args.shape_warmup
    if step < warmup:
        return args.lr * min(1.0, (step + 1) / 50)
    step, total = step - warmup, args.steps - warmup
    ramp = min(1.0, (step + 1) / 200)
    return args.lr * ramp * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / total)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vq", type=Path, default=Path("training/runs/vq/checkpoint.pt"))
    p.add_argument("--out", type=Path, default=Path("training/runs/lm"))
    p.add_argument("--pool", type=int, default=6000, help="scenes encoded once for text-to-image training")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--gen-batch", type=int, default=8)
    p.add_argument("--und-batch", type=int, default=6)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--first-weight", type=float, default=24.0, help="loss weight of the first image token")
    p.add_argument("--edge-weight", type=float, default=4.0, help="extra loss weight of tokens unlike their "
                   "left and upper neighbours (see token_weights); 0 and --first-weight 1: plain next-token loss")
    p.add_argument("--init", type=Path, default=None, help="start from the weights of an exported folder (e.g. "
                   "janus_core/demo_model) instead of random ones, with a fresh optimizer and schedule; ignored "
                   "when --out holds a checkpoint to resume")
    p.add_argument("--texture", choices=TEXTURES, default="smooth", help="background texture of the generation "
                   "pool (scenes.render): 'thirds' tells each image token which third of its row it is in")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    add_amp_argument(p)
    p.add_argument("--pool-only", action="store_true", help="encode the pool and stop")
    p.add_argument("--understanding-only", action="store_true", help="train the understanding tower, aligner and "
                   "text head alone, the language model frozen (with --init, its generation weights stay bit-identical), "
                   "on --und-batch scenes a step; no token pool")
    p.add_argument("--shape-warmup", type=int, default=0, help="with --understanding-only: the first N steps train "
                   "only the tower and aligner, through a training-only probe head (ShapeProbe), to name the shape "
                   "of --shape-batch one-object scenes a step (of --shape-scenes drawn once)")
    p.add_argument("--shape-aux", type=float, default=0.0, help="with --understanding-only: weight of the probe's "
                   "shape loss on the one-object scenes of each understanding batch after the warm-up")
    p.add_argument("--shape-batch", type=int, default=32)
    p.add_argument("--shape-scenes", type=int, default=1300)
    args = p.parse_args(argv)
    set_threads(args.threads)
    if args.init is not None and not (args.init / "config.json").is_file():  # before the pool's minutes of work
        raise SystemExit(f"error: --init {args.init} is not an exported checkpoint folder (no config.json)")
    device = pick_device(args.device)
    args.amp = use_amp(args.amp, device)
    print(f"{device}: bf16 autocast {'on' if args.amp else 'off'}", file=sys.stderr)
    vq, vq_arch = load_vq(args.vq, device)
    if args.understanding_only and args.pool_only:
        raise SystemExit("error: --understanding-only builds no token pool: drop --pool-only")
    if (args.shape_warmup or args.shape_aux) and not args.understanding_only:
        raise SystemExit("error: --shape-warmup and --shape-aux train the tower alone: add --understanding-only")
    if not 0 <= args.shape_warmup < args.steps or not math.isfinite(args.shape_aux) or args.shape_aux < 0:
        raise SystemExit(f"error: --shape-warmup must be 0 .. --steps - 1 (got {args.shape_warmup} of {args.steps}) "
                         f"and --shape-aux a finite weight >= 0 (got {args.shape_aux})")
    prior = load_checkpoint(args.out / "checkpoint.pt")  # checked here, before the pool's minutes of work
    if prior is not None and prior.get("understanding_only", False) != args.understanding_only:
        kind = "with" if args.understanding_only else "without"
        raise SystemExit(f"error: {args.out / 'checkpoint.pt'} was trained {kind} the generator (its optimizer "
                         "holds other parameters): resume it with the same --understanding-only setting, or give a "
                         "new --out")
    if args.understanding_only and args.init is None and prior is None:
        raise SystemExit("error: --understanding-only trains against a frozen language model: give --init with "
                         "an exported folder (e.g. janus_core/demo_model)")
    pool = None if args.understanding_only else build_pool(vq, args.out / "pool", args.pool, args.seed, device,
                                                            args.amp, args.texture)
    if args.pool_only:
        return 0
    tokenizer_path = build_tokenizer(args.out / "tokenizer.json")
    texts = Texts(tokenizer_path)
    lm_arch, vis_arch = LMArch(vocab_size=max(texts.tok.max_id + 1, LMArch.vocab_size)), VisionArch()
    torch.manual_seed(args.seed)
    lm = build_lm(lm_arch, vq_arch.num_embeddings, vq_arch.embed_dim)
    with torch.no_grad():  # image-token embeddings start from the codebook itself: neighbours in code space
        lm.gen_embed.weight.copy_(F.normalize(vq.quantize.embedding.weight.float().cpu(), dim=-1))
    und = build_understanding(vis_arch, lm_arch)
    lm.to(device)
    und.to(device)
    if args.understanding_only:  # the generator is not trained (the text head is the understanding model's)
        lm.requires_grad_(False)
    probe = ShapeProbe(lm_arch.hidden_size).to(device) if args.shape_warmup or args.shape_aux else None
    params = [q for q in list(lm.parameters()) + list(und.parameters()) if q.requires_grad]
    if probe is not None:
        params += list(probe.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.05)
    ckpt_path = args.out / "checkpoint.pt"
    state = load_checkpoint(ckpt_path)
    start = 0
    if state is not None:
        lm.load_state_dict(state["lm"])
        und.load_state_dict(state["und"])
        if (probe is None) != ("shape_probe" not in state):
            raise SystemExit(f"error: {ckpt_path} was trained {'without' if probe is not None else 'with'} the shape "
                             "probe (its optimizer holds other parameters): resume it with the same --shape-warmup / "
                             "--shape-aux, or give a new --out")
        if probe is not None:
            probe.load_state_dict(state["shape_probe"])
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
        print(f"resuming {ckpt_path} at step {start}")
    elif args.init is not None:
        from export import read_folder

        bundle = read_folder(args.init)
        if (bundle.lm_arch, bundle.vis_arch) != (lm_arch, vis_arch):
            raise SystemExit(f"error: --init {args.init} has other dimensions ({bundle.lm_arch}, {bundle.vis_arch})")
        lm.load_state_dict(bundle.lm.state_dict())
        und.load_state_dict(bundle.und.state_dict())
        print(f"starting from the weights in {args.init}")
    print(f"LM {parameter_count(lm) / 1e6:.2f} M, understanding {parameter_count(und) / 1e6:.2f} M parameters, "
          f"{lm_arch}, {vis_arch}, on {device}")
    prep = ImagePreprocess()
    n_image = vis_arch.vision_config(lm_arch.hidden_size).num_positions
    image_id = texts.tok.tok.token_to_id("<image_placeholder>")
    codebook = vq.quantize.embedding.weight.detach().float().to(device)
    weigh = (None if args.first_weight == 1 and args.edge_weight == 0 else
             lambda targets: token_weights(targets, codebook, args.first_weight, args.edge_weight))
    shape_scenes = ShapeScenes(args.seed, args.shape_scenes) if args.shape_warmup > start else None
    progress = Progress("lm", args.steps, start)
    recent: list[tuple[float, float]] = []
    for step in range(start, args.steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, args)
        rng = step_rng(args.seed, step)
        if step < args.shape_warmup:  # the tower and aligner alone, on the shape (the LM is not run)
            pixels, labels = shape_scenes.batch(rng, args.shape_batch)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                logits = probe(und.image_features(pixels.to(device)).float())
            gen, und_loss = torch.zeros((), device=device), F.cross_entropy(logits.float(), labels.to(device))
        else:
            gen_rows = None if pool is None else generation_batch(rng, pool, args.seed, texts, args.gen_batch)
            labels = []
            und_rows, pixels = understanding_batch(rng, texts, args.und_batch, prep, n_image, args.texture, labels)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                gen = (torch.zeros((), device=device) if gen_rows is None
                       else generation_loss(lm, gen_rows, device, weigh))
                und_loss = understanding_loss(lm, und, und_rows, pixels, image_id, device, probe, labels,
                                              args.shape_aux)
        loss = gen + und_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        recent = (recent + [(gen.item(), und_loss.item())])[-20:]
        progress(step + 1, gen=sum(r[0] for r in recent) / len(recent), und=sum(r[1] for r in recent) / len(recent))
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            save_checkpoint(ckpt_path, {"lm": lm.state_dict(), "und": und.state_dict(), "optimizer": opt.state_dict(),
                                        "step": step + 1, "understanding_only": args.understanding_only,
                                        **({} if probe is None else {"shape_probe": probe.state_dict()}),
                                        "lm_arch": lm_arch.as_dict(), "vision_arch": vis_arch.as_dict(),
                                        "vq_arch": vq_arch.as_dict()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
