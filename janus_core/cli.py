"""`python -m janus_core generate | decode | encode | convert`."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from . import __version__
from .errors import JanusError
from .quantize import QUANTIZE_CHOICES

EXIT_ERROR = 2


class TerminalProgress:
    """One self-overwriting stderr line per long step (load, tokens, decode)."""

    def __init__(self, label: str, stream=sys.stderr):
        self.label, self.stream, self.start = label, stream, time.monotonic()

    def __call__(self, done: int, total: int, *_):
        elapsed = time.monotonic() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        end = "\n" if done >= total else ""
        self.stream.write(f"\r{self.label}: {done}/{total} ({rate:.1f}/s, {elapsed:.1f} s){end}")
        self.stream.flush()


def _load(args, with_encoder=False, need_lm=True):
    from .hub import resolve_model
    from .loader import load, load_vq

    folder = resolve_model(args.model, args.models_dir)
    print(f"loading {folder}", file=sys.stderr)
    if need_lm:
        return load(folder, dtype=args.dtype, device=args.device, vq_dtype=args.vq_dtype, with_encoder=with_encoder,
                    prompt_format=args.prompt_format, progress=TerminalProgress("load"), quantize=args.quantize)
    return None, load_vq(folder, dtype=args.vq_dtype, device=args.device, with_encoder=with_encoder,
                         progress=TerminalProgress("load"))


def _save_pngs(images, out: Path, texts: list[dict]) -> list[Path]:
    import numpy as np
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        info = PngInfo()
        for key, value in texts[i].items():
            info.add_text(key, value if isinstance(value, str) else json.dumps(value))
        arr = (img.numpy() * 255).round().clip(0, 255).astype(np.uint8)
        path = out / f"{i:05d}.png"
        Image.fromarray(arr).save(path, pnginfo=info)
        paths.append(path)
    return paths


def cmd_generate(args) -> int:
    from .prompt import prepare_cond
    from .sampler import sample_tokens
    from .tokens_io import save_tokens
    from .vq import decode_tokens

    lm, vq = _load(args)
    cond = prepare_cond(lm, args.prompt, args.negative_prompt or "")
    tokens = sample_tokens(lm, cond, seed=args.seed, batch_size=args.batch_size, cfg=args.cfg,
                           temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                           progress=TerminalProgress("tokens"), progress_every=8)
    images = decode_tokens(vq, tokens, progress=TerminalProgress("decode"))
    out = Path(args.output)
    texts = [{"prompt": args.prompt, "negative_prompt": args.negative_prompt or "", "seed": str(seed),
              "settings": tokens.settings, "model": tokens.model, "software": f"janus_core {__version__}"}
             for seed in tokens.seeds]
    for path in _save_pngs(images, out, texts):
        print(path)
    if args.save_tokens:
        print(save_tokens(tokens, out / "tokens.safetensors"))
    return 0


def cmd_decode(args) -> int:
    from .tokens_io import load_tokens
    from .vq import decode_tokens

    tokens = load_tokens(args.tokens)
    _, vq = _load(args, need_lm=False)
    images = decode_tokens(vq, tokens, progress=TerminalProgress("decode"))
    texts = [{"prompt": tokens.prompt, "seed": json.dumps(s), "settings": tokens.settings, "model": tokens.model}
             for s in tokens.seeds]
    for path in _save_pngs(images, Path(args.output), texts):
        print(path)
    return 0


def cmd_encode(args) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from .payloads import JanusTokens
    from .tokens_io import save_tokens
    from .vq import encode_images

    _, vq = _load(args, with_encoder=True, need_lm=False)
    arrays = []
    for f in args.image:
        with Image.open(f) as im:
            arrays.append(torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0))
    # images of different sizes are encoded one at a time (each is resized / cropped to 384x384)
    parts = [encode_images(vq, a[None]) for a in arrays]
    tokens = JanusTokens(tokens=torch.cat([p.tokens for p in parts]), seeds=[None] * len(parts),
                         settings=parts[0].settings, model=parts[0].model)
    print(save_tokens(tokens, args.output))
    return 0


def cmd_convert(args) -> int:
    from safetensors.torch import save_file

    from .config import read_checkpoint_config
    from .weights import WeightReader

    src, dst = Path(args.model), Path(args.output)
    read_checkpoint_config(src)  # refuse unknown layouts early
    if dst.resolve() == src.resolve():
        raise JanusError("--output must be a different folder from --model.")
    if dst.exists() and any(dst.iterdir()):
        raise JanusError(f"{dst} is not empty; choose a new folder (nothing is overwritten).")
    reader = WeightReader(src)
    if all(f.suffix == ".safetensors" for f in reader.files):
        raise JanusError(f"{src} already holds safetensors weights; nothing to convert.")
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.suffix in (".json", ".md", ".txt", ".model") and not f.name.endswith(".bin.index.json"):
            shutil.copy2(f, dst / f.name)
    n = len(reader.files)
    weight_map = {}
    by_file: dict = {}
    for key in reader.shapes:
        by_file.setdefault(reader.file_of(key), []).append(key)
    for i, path in enumerate(reader.files):
        name = "model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        tensors = {k: reader.read(k).contiguous() for k in by_file.get(path, [])}
        save_file(tensors, str(dst / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in tensors})
        del tensors
        print(dst / name)
    if n > 1:
        (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m janus_core", description="Janus / Janus-Pro text-to-image (384x384).")
    p.add_argument("--version", action="version", version=__version__)
    sub = p.add_subparsers(dest="command", required=True)

    def model_args(sp, lm=True):
        sp.add_argument("--model", required=True, help="checkpoint folder or a known repo id (e.g. deepseek-ai/Janus-Pro-1B)")
        sp.add_argument("--models-dir", default=None, help="where repo ids are downloaded (default: the hub cache)")
        sp.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps, ...")
        sp.add_argument("--vq-dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
        sp.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice, one per core, the fastest here)")
        if lm:
            sp.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
            sp.add_argument("--prompt-format", default="auto", choices=["auto", "pro", "janus"])
            sp.add_argument("--quantize", default="none", choices=list(QUANTIZE_CHOICES),
                            help="weight-only quantization of the language model's linear layers: int8 ~ half the "
                                 "memory of bf16, int4 ~ a quarter; both faster on the CPU; images differ slightly "
                                 "(default: none, exact)")

    g = sub.add_parser("generate", help="text -> images (PNG) [and tokens]")
    model_args(g)
    g.add_argument("--prompt", required=True)
    g.add_argument("--negative-prompt", default="")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--batch-size", type=int, default=1)
    g.add_argument("--cfg", type=float, default=5.0)
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=0, help="0 = off")
    g.add_argument("--top-p", type=float, default=1.0, help="1.0 = off")
    g.add_argument("--output", required=True, help="folder for 00000.png, 00001.png, ...")
    g.add_argument("--save-tokens", action="store_true", help="also write OUTPUT/tokens.safetensors")
    g.set_defaults(func=cmd_generate)

    d = sub.add_parser("decode", help="tokens.safetensors -> images (PNG)")
    model_args(d, lm=False)
    d.add_argument("--tokens", required=True)
    d.add_argument("--output", required=True)
    d.set_defaults(func=cmd_decode)

    e = sub.add_parser("encode", help="images -> tokens.safetensors (short side to 384, centre crop)")
    model_args(e, lm=False)
    e.add_argument("--image", required=True, nargs="+")
    e.add_argument("--output", required=True)
    e.set_defaults(func=cmd_encode)

    c = sub.add_parser("convert", help="original pytorch_model*.bin checkpoint -> safetensors, same layout")
    c.add_argument("--model", required=True)
    c.add_argument("--output", required=True)
    c.set_defaults(func=cmd_convert)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "command", None) == "generate" and args.batch_size < 1:
        print("error: --batch-size must be >= 1", file=sys.stderr)
        return EXIT_ERROR
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except JanusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
