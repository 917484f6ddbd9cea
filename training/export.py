"""Stage 3 of the demo model: write the trained VQ, language model and tower as one checkpoint folder in the
transformers layout (`model_type: janus`), the one janus_core ships as `--model demo`.

    python training/export.py --vq training/runs/vq/checkpoint.pt --lm training/runs/lm/checkpoint.pt \
        --out janus_core/demo_model

The names come from janus_core's own loader, inverted: a transformers model of the demo's dimensions is written
once with placeholder weights, janus_core opens it, and its key maps (janus_core parameter -> checkpoint key(s))
say where each trained tensor goes; fused tensors are split along dim 0 as the loader concatenates them. So the
folder loads in janus_core with no special case, and in transformers' `JanusForConditionalGeneration` too (that
writer and its config are transformers' own; this script needs the test extra, `pip install transformers`).
Weights are stored in bfloat16 (half the size; the rounding is below what the pictures show). The folder is
written under a temporary name and renamed, so a failed export leaves the old one intact.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arch import LMArch, VisionArch, VQArch, build_lm, build_understanding, build_vq  # noqa: E402
from common import load_checkpoint  # noqa: E402

from janus_core.loader import Checkpoint, understanding_config  # noqa: E402
from janus_core.weights import understanding_sources  # noqa: E402
from tests.tiny_checkpoint import _set_generation_config as set_token_ids  # noqa: E402  (the same ids the tests set)

PREPROCESSOR = {"do_normalize": True, "do_pad": True, "do_rescale": True, "do_resize": True,
                "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "JanusImageProcessor",
                "image_std": [0.5, 0.5, 0.5], "min_size": 14, "processor_class": "JanusProcessor",
                "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"height": 384, "width": 384}}


def _arch(cls, d):
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def hf_config(vq: VQArch, lm: LMArch, vis: VisionArch):
    from transformers import JanusConfig

    h = lm.hidden_size
    return JanusConfig(
        text_config={"model_type": "llama", "hidden_size": h, "intermediate_size": lm.intermediate_size,
                     "num_hidden_layers": lm.num_layers, "num_attention_heads": lm.num_heads,
                     "num_key_value_heads": lm.num_kv_heads, "vocab_size": lm.vocab_size,
                     "max_position_embeddings": lm.max_position_embeddings, "rope_theta": lm.rope_theta,
                     "rms_norm_eps": lm.rms_norm_eps},
        vision_config={"hidden_size": vis.width, "num_hidden_layers": vis.depth, "num_attention_heads": vis.heads,
                       "patch_size": vis.patch, "image_size": 384, "mlp_ratio": vis.mlp_hidden / vis.width,
                       "depth": vis.aligner_depth, "projection_dim": h, "num_image_tokens": (384 // vis.patch) ** 2},
        vq_config={"embed_dim": vq.embed_dim, "num_embeddings": vq.num_embeddings, "base_channels": vq.base_channels,
                   "channel_multiplier": list(vq.channel_multiplier), "num_res_blocks": vq.num_res_blocks,
                   "latent_channels": vq.latent_channels, "projection_dim": h, "image_token_embed_dim": h,
                   "num_patches": 24},
        tie_word_embeddings=False,
    )


def write_folder(model, folder: Path, tokenizer_path: Path, dtype) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tokenizer_path, folder / "tokenizer.json")
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2) + "\n")
    model.to(dtype).save_pretrained(folder)
    for f in folder.iterdir():
        f.chmod(0o644)  # package data: readable by everyone (the writer may create private temporary files)


def trained_tensors(ckpt: Checkpoint, lm, und, vq) -> dict[str, torch.Tensor]:
    """checkpoint key -> trained tensor, by janus_core's own key maps (the loader's, read backwards)."""
    out: dict[str, torch.Tensor] = {}

    def put(module, sources):
        for name, tensor in module.state_dict().items():
            keys = sources[name]
            sizes = [ckpt.reader.shapes[k][0] for k in keys]
            for key, part in zip(keys, torch.split(tensor, sizes) if len(keys) > 1 else [tensor]):
                out[key] = part.detach().float().contiguous()

    for module, sources in module_sources(ckpt, lm, und, vq):
        put(module, sources)
    return out


def module_sources(ckpt: Checkpoint, lm, und, vq):
    """(module, {parameter name: checkpoint keys}) for the three trained modules, by janus_core's key maps."""
    cfg = understanding_config(ckpt)
    return ((lm, ckpt.generator_sources),
            (und, understanding_sources(ckpt.layout, cfg.depth, len(cfg.aligner_dims) - 1)),
            (vq, {n: (ckpt.vq_names[n],) for n in vq.state_dict()}))


def archs_of(config: dict) -> tuple[VQArch, LMArch, VisionArch]:
    """The training dimensions of an exported folder's config.json (hf_config read backwards)."""
    t, v, q = config["text_config"], config["vision_config"], config["vq_config"]
    vq = VQArch(base_channels=q["base_channels"], channel_multiplier=tuple(q["channel_multiplier"]),
                num_res_blocks=q["num_res_blocks"], latent_channels=q["latent_channels"], embed_dim=q["embed_dim"],
                num_embeddings=q["num_embeddings"])
    rope = (t.get("rope_parameters") or {}).get("rope_theta", t.get("rope_theta", LMArch.rope_theta))
    lm = LMArch(hidden_size=t["hidden_size"], num_layers=t["num_hidden_layers"], num_heads=t["num_attention_heads"],
                num_kv_heads=t["num_key_value_heads"], intermediate_size=t["intermediate_size"],
                vocab_size=t["vocab_size"], max_position_embeddings=t["max_position_embeddings"], rope_theta=rope,
                rms_norm_eps=t["rms_norm_eps"])
    vis = VisionArch(width=v["hidden_size"], depth=v["num_hidden_layers"], heads=v["num_attention_heads"],
                     patch=v["patch_size"], mlp_hidden=round(v["mlp_ratio"] * v["hidden_size"]),
                     aligner_depth=v["depth"])
    return vq, lm, vis


def read_folder(folder: Path):
    """The training modules (VQ with encoder, language model, tower) holding an exported folder's weights, in fp32:
    `trained_tensors` read backwards, so a later training run can start from a shipped checkpoint."""
    vq_arch, lm_arch, vis_arch = archs_of(json.loads((folder / "config.json").read_text()))
    vq = build_vq(vq_arch)
    lm = build_lm(lm_arch, vq_arch.num_embeddings, vq_arch.embed_dim)
    und = build_understanding(vis_arch, lm_arch)
    with Checkpoint(folder) as ckpt:
        for module, sources in module_sources(ckpt, lm, und, vq):
            state = {name: torch.cat([ckpt.reader.read(k).float() for k in sources[name]])
                     for name in module.state_dict()}
            module.load_state_dict(state, strict=True)
    return SimpleNamespace(vq=vq.eval(), vq_arch=vq_arch, lm=lm, lm_arch=lm_arch, und=und, vis_arch=vis_arch)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vq", type=Path, default=Path("training/runs/vq/checkpoint.pt"))
    p.add_argument("--lm", type=Path, default=Path("training/runs/lm/checkpoint.pt"))
    p.add_argument("--tokenizer", type=Path, default=None, help="default: tokenizer.json next to --lm")
    p.add_argument("--out", type=Path, default=Path("janus_core/demo_model"))
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    args = p.parse_args(argv)
    from transformers import JanusForConditionalGeneration

    lm_state = load_checkpoint(args.lm)
    if args.vq.is_dir():  # the VQ of an exported folder (an LM run started with --vq janus_core/demo_model)
        bundle = read_folder(args.vq)
        vq, vq_arch, vq_step = bundle.vq, bundle.vq_arch, f"from {args.vq}"
    else:
        vq_state = load_checkpoint(args.vq)
        if vq_state is None:
            raise SystemExit(f"error: missing checkpoint {args.vq}")
        vq_arch, vq_step = _arch(VQArch, vq_state["arch"]), vq_state["step"]
        vq = build_vq(vq_arch)
        vq.load_state_dict(vq_state["model"])
    if lm_state is None:
        raise SystemExit(f"error: missing checkpoint {args.lm}")
    lm_arch, vis_arch = _arch(LMArch, lm_state["lm_arch"]), _arch(VisionArch, lm_state["vision_arch"])
    lm = build_lm(lm_arch, vq_arch.num_embeddings, vq_arch.embed_dim)
    lm.load_state_dict(lm_state["lm"])
    und = build_understanding(vis_arch, lm_arch)
    und.load_state_dict(lm_state["und"])
    tokenizer = args.tokenizer or args.lm.parent / "tokenizer.json"

    model = JanusForConditionalGeneration(hf_config(vq_arch, lm_arch, vis_arch)).eval()
    set_token_ids(model, tokenizer)
    with tempfile.TemporaryDirectory() as scratch:
        placeholder = Path(scratch) / "placeholder"
        write_folder(model, placeholder, tokenizer, torch.float32)
        with Checkpoint(placeholder) as ckpt:
            tensors = trained_tensors(ckpt, lm, und, vq)
    state = model.state_dict()
    missing = sorted(set(state) - set(tensors))
    if missing:
        raise SystemExit(f"error: no trained tensor for {missing[:5]} (and {max(0, len(missing) - 5)} more)")
    model.load_state_dict(tensors, strict=True)
    target = args.out.resolve()
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    write_folder(model, staging, tokenizer, getattr(torch, args.dtype))
    if target.exists():
        print(f"replacing the existing {target}")  # the point of the command: rebuild the bundled model
        shutil.rmtree(target)
    staging.rename(target)
    size = sum(f.stat().st_size for f in target.iterdir())
    print(f"wrote {target} ({size / 2**20:.1f} MiB): VQ step {vq_step}, LM step {lm_state['step']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
