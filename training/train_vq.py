"""Stage 1 of the demo model: the VQ image tokenizer, trained on crops of drawn scenes.

    python training/train_vq.py --out training/runs/vq            # resumes from its last checkpoint

What makes a small Janus VQ learn on a CPU (../shared/reference/demo-model-notes.md measured the failures):
- never a wholly flat input: crops are centred on shape edges most of the time, and every scene has a texture;
- an autoencoder warm-up without the quantizer (on l2-normalised latents, the space the codes live in), then
  the codebook is set from encoder outputs, then the quantized phase with straight-through gradients, the
  codebook / commitment losses and dead-code restarts;
- bfloat16 autocast on CPUs (about 1.6x faster here), a cosine learning-rate decay, and later phases on larger
  crops and whole 384 x 384 scenes: GroupNorm and the attention layers must see the statistics and the 24 x 24
  grid of whole images (trained on 64 px crops only, whole scenes decode with shifted colours).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common import (Progress, add_amp_argument, load_checkpoint, pick_device, save_checkpoint, set_threads,  # noqa: I001
                    step_rng, use_amp)
from arch import VQArch, build_vq, parameter_count
from scenes import SIZE, random_scene, render

GRID_PX = 16


def to_pixels(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 [H, W, 3] arrays -> float [B, 3, H, W] in -1..1."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def crop_batch(rng: random.Random, batch: int, crop: int, per_scene: int = 4) -> torch.Tensor:
    """`batch` crops of `crop` px from drawn scenes, most of them centred near a shape's edge."""
    crops = []
    per_scene = max(1, per_scene * 64 * 64 // (crop * crop))  # large crops: one per scene, for variety
    while len(crops) < batch:
        scene = random_scene(rng)
        img = render(scene)
        for _ in range(min(per_scene, batch - len(crops))):
            if crop >= SIZE:
                crops.append(img)
                continue
            if scene.shapes and rng.random() < 0.75:
                s = rng.choice(scene.shapes)
                angle = rng.uniform(0, 2 * math.pi)
                cx = s.cx + math.cos(angle) * s.width / 2 + rng.uniform(-crop / 4, crop / 4)
                cy = s.cy + math.sin(angle) * s.width / 2 + rng.uniform(-crop / 4, crop / 4)
            else:
                cx, cy = rng.uniform(0, SIZE), rng.uniform(0, SIZE)
            x0 = int(min(max(cx - crop / 2, 0), SIZE - crop))
            y0 = int(min(max(cy - crop / 2, 0), SIZE - crop))
            crops.append(img[y0 : y0 + crop, x0 : x0 + crop])
    return to_pixels(crops)


def encode_latents(vq, pixels: torch.Tensor) -> torch.Tensor:
    """Continuous, l2-normalised code-space latents [B, h, w, d]."""
    z = vq.quant_conv(vq.encoder(pixels))
    return F.normalize(z.float().permute(0, 2, 3, 1), dim=-1)


def quantize(vq, zn: torch.Tensor):
    """Nearest normalised code (cosine), straight-through. Returns (quantized [B, h, w, d], indices, vq loss)."""
    codebook = F.normalize(vq.quantize.embedding.weight.float(), dim=-1)
    idx = torch.argmax(zn.reshape(-1, zn.shape[-1]) @ codebook.t(), dim=-1).view(zn.shape[:-1])
    e = codebook[idx]
    loss = F.mse_loss(e, zn.detach()) + 0.25 * F.mse_loss(zn, e.detach())
    return zn + (e - zn).detach(), idx, loss


def decode_latents(vq, zq: torch.Tensor) -> torch.Tensor:
    return vq.decoder(vq.post_quant_conv(zq.permute(0, 3, 1, 2)))


def psnr(recon: torch.Tensor, target: torch.Tensor) -> float:
    mse = F.mse_loss((recon.float().clamp(-1, 1) + 1) / 2, (target + 1) / 2).item()
    return 10 * math.log10(1 / max(mse, 1e-10))


def parse_phases(text: str) -> list[tuple[int, int, int]]:
    """"0:64x32,2700:192x4" -> [(0, 64, 32), (2700, 192, 4)]: from step, crop size, batch."""
    out = []
    for part in text.split(","):
        start, size = part.split(":")
        crop, batch = size.split("x")
        out.append((int(start), int(crop), int(batch)))
    return sorted(out)


def schedule(step: int, args) -> tuple[str, int, int]:
    """(phase, crop, batch) of a step: warm-up (no quantizer) then quantized, on the crop size of `--phases`.
    Larger crops later matter: GroupNorm's statistics over a 64 px crop differ from those over a whole scene,
    which shows as colour shifts on whole images until the model has seen them."""
    crop, batch = next((c, b) for start, c, b in reversed(parse_phases(args.phases)) if step >= start)
    return ("warmup" if step < args.warmup_steps else "quantized"), crop, batch


def learning_rate(step: int, args) -> float:
    ramp = min(1.0, (step + 1) / 100)
    return args.lr * ramp * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))


@torch.no_grad()
def init_codebook(vq, args, device) -> None:
    """Codes set from encoder outputs of fresh crops (the warm-up has shaped the latent space)."""
    pool = []
    rng = step_rng(args.seed + 1, 0)
    while sum(p.shape[0] for p in pool) < 8 * vq.codebook_size:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            zn = encode_latents(vq, crop_batch(rng, args.batch, args.crop).to(device))
        pool.append(zn.reshape(-1, zn.shape[-1]).float())
    pool = torch.cat(pool)
    pick = torch.randperm(pool.shape[0], generator=torch.Generator().manual_seed(args.seed))[: vq.codebook_size]
    vq.quantize.embedding.weight.copy_(pool[pick.to(pool.device)])


def restart_dead_codes(vq, usage: torch.Tensor, zn: torch.Tensor, gen: torch.Generator) -> int:
    """Codes nobody used since the last check take the place of random latents of this batch."""
    dead = (usage == 0).nonzero().flatten()
    if len(dead):
        flat = zn.detach().reshape(-1, zn.shape[-1])
        pick = torch.randint(0, flat.shape[0], (len(dead),), generator=gen)
        with torch.no_grad():
            vq.quantize.embedding.weight[dead] = flat[pick.to(flat.device)] + 0.01 * torch.randn(
                len(dead), flat.shape[-1], generator=gen).to(flat.device)
    usage.zero_()
    return len(dead)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("training/runs/vq"))
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--warmup-steps", type=int, default=600, help="autoencoder steps before the quantizer")
    p.add_argument("--phases", default="0:64x32,2700:192x4,4500:384x2",
                   help="from which step which crop size x batch (384 = whole scenes)")
    p.add_argument("--crop", type=int, default=64, help="crop size of the codebook initialisation")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--codes", type=int, default=VQArch.num_embeddings)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    add_amp_argument(p)
    args = p.parse_args(argv)
    set_threads(args.threads)
    device = pick_device(args.device)
    args.amp = use_amp(args.amp, device)
    print(f"{device}: bf16 autocast {'on' if args.amp else 'off'}", file=sys.stderr)
    arch = VQArch(num_embeddings=args.codes)
    torch.manual_seed(args.seed)
    vq = build_vq(arch).to(device)
    opt = torch.optim.Adam(vq.parameters(), lr=args.lr, betas=(0.9, 0.99))
    ckpt_path = args.out / "checkpoint.pt"
    state = load_checkpoint(ckpt_path)
    start = 0
    if state is not None:
        if state["arch"] != arch.as_dict():
            raise SystemExit(f"{ckpt_path} was trained with {state['arch']}, not {arch.as_dict()}; use another --out")
        vq.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
        print(f"resuming {ckpt_path} at step {start}")
    print(f"VQ {parameter_count(vq) / 1e6:.2f} M parameters, {arch}, on {device}")
    usage = torch.zeros(arch.num_embeddings, dtype=torch.long, device=device)
    gen = torch.Generator().manual_seed(args.seed + start)
    progress = Progress("vq", args.steps, start)
    recent = []
    for step in range(start, args.steps):
        phase, crop, batch = schedule(step, args)
        if phase != "warmup" and step == args.warmup_steps:
            init_codebook(vq, args, device)
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, args)
        pixels = crop_batch(step_rng(args.seed, step), batch, crop).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            zn = encode_latents(vq, pixels)
            if phase == "warmup":
                zq, vq_loss = zn, torch.zeros((), device=device)
            else:
                zq, idx, vq_loss = quantize(vq, zn)
                usage += torch.bincount(idx.flatten(), minlength=arch.num_embeddings)
            recon = decode_latents(vq, zq).float()
        rec_loss = F.mse_loss(recon, pixels) + 0.2 * F.l1_loss(recon, pixels)
        loss = rec_loss + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vq.parameters(), 1.0)
        opt.step()
        recent.append(psnr(recon.detach(), pixels))
        recent = recent[-20:]
        restarted = 0
        if phase != "warmup" and (step + 1) % 100 == 0:
            restarted = restart_dead_codes(vq, usage, zn, gen)
        progress(step + 1, loss=loss.item(), psnr=sum(recent) / len(recent), **({"restarted": restarted} if restarted else {}))
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            save_checkpoint(ckpt_path, {"model": vq.state_dict(), "optimizer": opt.state_dict(), "step": step + 1,
                                        "arch": arch.as_dict(), "args": {k: str(v) for k, v in vars(args).items()}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
