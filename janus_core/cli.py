"""`python -m janus_core generate | decode | encode | describe | convert`.

User errors print `error: ...` on a line of their own and exit 2, before any long work where they can be
known then (settings, inputs and the output folder are checked before the model is loaded); Ctrl-C exits
130 leaving no partial files. Outputs never replace existing files: numbered PNGs continue after the
highest number already in the folder, other files are refused unless `--overwrite` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import __version__
from .errors import JanusError, SettingError
from .quantize import QUANTIZE_CHOICES

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
PNG_BYTES = 450_000  # an upper bound for one 384x384 RGB PNG with its text chunks
TOKENS_BYTES = 8 * 576 + 4096  # per image in a token file, plus the header


class TerminalProgress:
    """One self-overwriting stderr line per long step (load, tokens, decode)."""

    open_line = None  # the stream with an unfinished progress line, if any

    def __init__(self, label: str, stream=None):
        self.label, self.stream, self.start = label, stream or sys.stderr, time.monotonic()

    def __call__(self, done: int, total: int, *_):
        elapsed = time.monotonic() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        end = "\n" if done >= total else ""
        self.stream.write(f"\r{self.label}: {done}/{total} ({rate:.1f}/s, {elapsed:.1f} s){end}")
        self.stream.flush()
        TerminalProgress.open_line = None if end else self.stream

    @staticmethod
    def finish_line() -> None:
        """End an unfinished progress line, so a message after it starts on a line of its own."""
        if TerminalProgress.open_line is not None:
            TerminalProgress.open_line.write("\n")
            TerminalProgress.open_line.flush()
            TerminalProgress.open_line = None


def _load(args, with_encoder=False, need_lm=True):
    from .hub import resolve_model
    from .loader import load, load_vq, resolve_device

    resolve_device(args.device)  # a wrong device fails before a download or a read
    folder = resolve_model(args.model, args.models_dir)
    print(f"loading {folder}", file=sys.stderr)
    if need_lm:
        _say_auto_dtype(args)
        return load(folder, dtype=args.dtype, device=args.device, vq_dtype=args.vq_dtype, with_encoder=with_encoder,
                    prompt_format=args.prompt_format, progress=TerminalProgress("load"), quantize=args.quantize)
    return None, load_vq(folder, dtype=args.vq_dtype, device=args.device, with_encoder=with_encoder,
                         progress=TerminalProgress("load"))


def _say_auto_dtype(args) -> None:
    """One stderr line saying what --dtype auto chose here and why."""
    if args.dtype not in (None, "", "auto"):
        return
    from .loader import auto_dtype_reason, resolve_device

    dtype, why = auto_dtype_reason(resolve_device(args.device))
    print(f"dtype auto -> {str(dtype).replace('torch.', '')} ({why})", file=sys.stderr)


def _save_pngs(images, out, first: int, texts: list[dict]) -> list[Path]:
    """Numbered PNGs from `first` on, each written to a temporary name and linked into place (never replacing).
    `out` is an OutputFolder (created on the first write) or an existing folder."""
    import numpy as np
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from .files import write_new_file

    save = out.write_new_file if hasattr(out, "write_new_file") else lambda name, fn: write_new_file(out / name, fn)
    paths = []
    for i, img in enumerate(images):
        info = PngInfo()
        for key, value in texts[i].items():
            info.add_text(key, value if isinstance(value, str) else json.dumps(value))
        arr = (img.numpy() * 255).round().clip(0, 255).astype(np.uint8)
        picture = Image.fromarray(arr)
        path = save(f"{first + i:05d}.png", lambda tmp: picture.save(tmp, format="PNG", pnginfo=info))
        paths.append(path)
    return paths


def _image_output(folder: str, images: int, extra_bytes: int = 0):
    """The output folder, proven writable with room for the PNGs before any long work, but created only when the
    first PNG is written (a run that fails before then leaves nothing behind)."""
    from .files import OutputFolder

    return OutputFolder(folder, images * PNG_BYTES + extra_bytes)


def cmd_generate(args) -> int:
    from .files import next_number
    from .prompt import prepare_cond
    from .sampler import decoding_settings, sample_tokens
    from .tokens_io import save_tokens
    from .validate import sampler_settings, text
    from .vq import decode_tokens

    settings = sampler_settings(seed=args.seed, batch_size=args.batch_size, cfg=args.cfg,
                                temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    text("prompt", args.prompt)
    text("negative_prompt", args.negative_prompt or "")
    decoding, window, _ = decoding_settings(args.decoding, args.window, "up")
    batch = settings["batch_size"]
    with _image_output(args.output, batch, batch * TOKENS_BYTES if args.save_tokens else 0) as out:
        lm, vq = _load(args)
        cond = prepare_cond(lm, args.prompt, args.negative_prompt or "")
        tokens = sample_tokens(lm, cond, **settings, progress=TerminalProgress("tokens"), progress_every=8,
                               threads=args.threads, decoding=decoding, window=window)
        images = decode_tokens(vq, tokens, progress=TerminalProgress("decode"))
        texts = [{"prompt": args.prompt, "negative_prompt": args.negative_prompt or "", "seed": str(seed),
                  "settings": tokens.settings, "model": tokens.model, "software": f"janus_core {__version__}"}
                 for seed in tokens.seeds]
        first = next_number(out.path)  # counted now, after the run: another run may have written meanwhile
        for path in _save_pngs(images, out, first, texts):
            print(path)
        if args.save_tokens:
            name = ("tokens.safetensors" if not (out.path / "tokens.safetensors").exists()
                    else f"tokens_{first:05d}.safetensors")
            print(save_tokens(tokens, out.path / name))
    run = tokens.settings
    how = "sequential"
    if run["adaptive"] and run["decoding"] == "sequential":
        how += f": a window forward costs {run['window_cost']:.2f} one-token forwards here, more than it can save"
    if run["decoding"] == "zipar":
        how = f"zipar, rows {run['window']} tokens apart (lossy)"
    if run["decoding"] in ("jacobi", "jacobi_grouped"):
        how = f"{run['decoding']}, window {run['window']}"
        if run["adaptive"]:
            how += (f", one-token steps where the window did not pay its cost of {run['window_cost']:.2f} one-token "
                    "forwards")
    print(f"{batch} image{'s' * (batch > 1)}: 576 tokens each in {run['forwards']} forwards ({how})", file=sys.stderr)
    return 0


def cmd_decode(args) -> int:
    from .files import next_number
    from .tokens_io import load_tokens
    from .vq import decode_tokens

    tokens = load_tokens(args.tokens)
    with _image_output(args.output, tokens.batch_size) as out:
        _, vq = _load(args, need_lm=False)
        images = decode_tokens(vq, tokens, progress=TerminalProgress("decode"))
        texts = [{"prompt": tokens.prompt, "seed": json.dumps(s), "settings": tokens.settings, "model": tokens.model}
                 for s in tokens.seeds]
        for path in _save_pngs(images, out, next_number(out.path), texts):
            print(path)
    return 0


def cmd_encode(args) -> int:
    import torch

    from .files import check_new_file
    from .images import read_image
    from .payloads import JanusTokens
    from .tokens_io import save_tokens
    from .vq import encode_images

    arrays = [read_image(f, "--image") for f in args.image]  # every file is checked before the model loads
    check_new_file(args.output, args.overwrite, len(arrays) * TOKENS_BYTES)
    _, vq = _load(args, with_encoder=True, need_lm=False)
    # images of different sizes are encoded one at a time (each is resized / cropped to 384x384)
    parts = [encode_images(vq, a[None]) for a in arrays]
    tokens = JanusTokens(tokens=torch.cat([p.tokens for p in parts]), seeds=[None] * len(parts),
                         settings=parts[0].settings, model=parts[0].model)
    print(save_tokens(tokens, args.output, overwrite=args.overwrite))
    return 0


def _note(message: str) -> None:
    """A run goes on with something adjusted: one `note:` line on stderr (stdout keeps only the results)."""
    TerminalProgress.finish_line()
    print(f"note: {message.replace('max_new_tokens', '--max-new-tokens')}", file=sys.stderr)


def cmd_describe(args) -> int:
    from .hub import resolve_model
    from .images import open_image
    from .validate import text
    from .loader import build_generator, build_understanding, open_checkpoint, resolve_device
    from .understand import check_settings, describe

    resolve_device(args.device)
    check_settings(args.temperature, args.top_p, args.max_new_tokens)  # before minutes of loading
    pictures = [open_image(f, "--image") for f in args.image]  # every file checked before the model loads
    text("question", args.question, allow_empty=False, empty_hint="give --question some text")
    folder = resolve_model(args.model, args.models_dir)
    print(f"loading {folder}", file=sys.stderr)
    _say_auto_dtype(args)
    with open_checkpoint(folder) as ckpt:  # one pass over the files: generation model + understanding parts
        lm = build_generator(ckpt, args.dtype, args.device, args.prompt_format, progress=TerminalProgress("load"),
                             quantize=args.quantize)
        und = build_understanding(ckpt, lm.dtype, lm.device, quantize=lm.quantize)
    answers = describe(lm, pictures, args.question, seed=args.seed, temperature=args.temperature, top_p=args.top_p,
                       max_new_tokens=args.max_new_tokens, system_prompt=args.system_prompt,
                       progress=TerminalProgress("tokens"), understanding=und, notice=_note, threads=args.threads)
    if args.json:
        print(json.dumps([{"image": f, "answer": a} for f, a in zip(args.image, answers)], ensure_ascii=False, indent=1))
    elif len(answers) == 1:
        print(answers[0])
    else:
        for f, a in zip(args.image, answers):
            print(f"== {f}\n{a}")
    return 0


def cmd_convert(args) -> int:
    from safetensors.torch import save_file

    from .config import read_checkpoint_config
    from .files import OutputFolder
    from .weights import WeightReader

    src, dst = Path(args.model), Path(args.output)
    read_checkpoint_config(src)  # refuse unknown layouts early
    if dst.resolve() == src.resolve():
        raise SettingError("--output must be a different folder from --model.", input="output")
    if dst.is_dir() and any(dst.iterdir()):
        raise JanusError(f"{dst} is not empty; choose a new folder (nothing is overwritten).", input="output")
    reader = WeightReader(src)
    if all(f.suffix == ".safetensors" for f in reader.files):
        raise JanusError(f"{src} already holds safetensors weights; nothing to convert.", input="model")
    import shutil

    # a failed conversion removes what it wrote (a checkpoint folder without all its weights is worse than none)
    with OutputFolder(dst, sum(f.stat().st_size for f in reader.files), remove_written=True) as out:
        for f in src.iterdir():
            if f.is_file() and f.suffix in (".json", ".md", ".txt", ".model") and not f.name.endswith(".bin.index.json"):
                out.write_new_file(f.name, lambda tmp, f=f: shutil.copy2(f, tmp))
        n = len(reader.files)
        weight_map = {}
        by_file: dict = {}
        for key in reader.shapes:
            by_file.setdefault(reader.file_of(key), []).append(key)
        for i, path in enumerate(reader.files):
            name = "model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            tensors = {k: reader.read(k).contiguous() for k in by_file.get(path, [])}
            out.write_new_file(name, lambda tmp, part=tensors: save_file(part, str(tmp), metadata={"format": "pt"}))
            weight_map.update({k: name for k in tensors})
            del tensors
            print(dst / name)
        if n > 1:  # the index last: a folder without it is visibly incomplete
            index = json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1).encode()
            out.write_new_file("model.safetensors.index.json", lambda tmp: tmp.write_bytes(index))
    return 0


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Epilogs keep their line breaks (each command's example); every option's help ends with its default."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.required or "%(default)" in text or "default" in text or action.default is argparse.SUPPRESS
                or not action.option_strings):
            return text
        if action.default is False:  # a switch
            return f"{text} (default: off)"
        return f"{text} (default: %(default)s)"


DTYPES = ["auto", "float32", "bfloat16", "float16"]
EXAMPLES = {
    "generate": 'python -m janus_core generate --model deepseek-ai/Janus-Pro-1B --prompt "a watercolor fox in the '
                'snow" --batch-size 2 --seed 42 --output out/ --save-tokens',
    "decode": "python -m janus_core decode --model deepseek-ai/Janus-Pro-1B --tokens out/tokens.safetensors "
              "--output decoded/",
    "encode": "python -m janus_core encode --model deepseek-ai/Janus-Pro-1B --image photo.jpg other.png "
              "--output photo_tokens.safetensors",
    "describe": 'python -m janus_core describe --model deepseek-ai/Janus-Pro-1B --image photo.jpg --question "What '
                'is in this picture?"',
    "convert": "python -m janus_core convert --model models/Janus-Pro/Janus-Pro-7B --output "
               "models/Janus-Pro/Janus-Pro-7B-st",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m janus_core", description="Janus / Janus-Pro text-to-image (384x384) "
                                "and image understanding.", formatter_class=_HelpFormatter,
                                epilog="example:\n  " + EXAMPLES["generate"] + "\n\n'python -m janus_core COMMAND "
                                "--help' lists the options of each command.")
    p.add_argument("--version", action="version", version=__version__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str):
        return sub.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter,
                              epilog=f"example:\n  {EXAMPLES[name]}")

    def model_args(sp, lm=True, vq=True):
        sp.add_argument("--model", required=True, help="checkpoint folder, or a known repo id (e.g. "
                        "deepseek-ai/Janus-Pro-1B) downloaded on first use (required)")
        sp.add_argument("--models-dir", default=None, metavar="DIR", help="where repo ids are downloaded, as "
                        "DIR/<name> (default: the Hugging Face hub cache)")
        sp.add_argument("--device", default="auto", help="where the model runs: auto = CUDA, else MPS, else the CPU; "
                        "or cpu, cuda, cuda:1, mps, ...")
        if vq:
            sp.add_argument("--vq-dtype", default="auto", choices=DTYPES, help="precision of the VQ image "
                            "decoder/encoder: auto = bfloat16 on a CUDA GPU that has it, else float32 (half-precision "
                            "convolutions are slow on the CPU)")
        sp.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch; without it, loading uses torch's choice (one per core) and the "
                             "token loop picks all cores, half or one from its own step times, so a busy machine "
                             "is not slowed down (the thread count does not change the result)")
        if lm:
            sp.add_argument("--dtype", default="auto", choices=DTYPES, help="precision of the language model: auto = "
                            "bfloat16 on a CUDA GPU that has it, float16 on MPS, bfloat16 on a CPU with native "
                            "bfloat16 (AVX512-BF16 / AMX, about twice as fast there), else float32 (the reference-exact "
                            "choice); the choice is printed")
            sp.add_argument("--prompt-format", default="auto", choices=["auto", "pro", "janus"],
                            help="the chat roles of the prompt: pro = Janus-Pro's <|User|> / <|Assistant|>, janus = "
                                 "Janus-1.3B's User / Assistant; auto = read from the checkpoint's name and tokenizer")
            sp.add_argument("--quantize", default="none", choices=list(QUANTIZE_CHOICES),
                            help="weight-only quantization of the language model's linear layers: none = exact; int8 "
                                 "~ half the memory of bf16, int4 ~ a quarter; both faster on the CPU, images differ "
                                 "slightly")

    g = command("generate", "text -> images (PNG) [and tokens]")
    model_args(g)
    g.add_argument("--prompt", required=True, help="what to draw (required)")
    g.add_argument("--negative-prompt", default="", help="what to steer away from; '' = the reference's pad-token "
                   "unconditional row (default: '')")
    g.add_argument("--seed", type=int, default=0, help="random seed; image i of the batch uses seed + i")
    g.add_argument("--batch-size", type=int, default=1, help="images sampled together, 1..1024")
    g.add_argument("--cfg", type=float, default=5.0, help="guidance weight: uncond + cfg * (cond - uncond); 1 = none")
    g.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; lower = safer, less varied")
    g.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens only; 0 = off")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling probability mass; 1.0 = off")
    g.add_argument("--decoding", default="auto", choices=["auto", "sequential", "jacobi", "jacobi_grouped", "zipar"],
                   help="jacobi = speculative Jacobi decoding: the same tokens (up to floating-point near-ties) in "
                        "fewer forwards; sequential = one forward per token; auto = jacobi with one-token steps "
                        "where a window does not pay (the CPU), else sequential; jacobi_grouped = lossy: jacobi "
                        "that also keeps guesses close to the model's pick (GSD), fewer forwards, other images; "
                        "zipar = lossy: rows decoded in parallel, each --window tokens behind the row above (ZipAR)")
    g.add_argument("--window", type=int, default=None,
                   help="jacobi: positions each forward guesses, 2..64 (default 16); zipar: how many tokens a row "
                        "runs ahead of the next, 4..24 (default 8; 24 = the sequential order)")
    g.add_argument("--output", required=True, metavar="FOLDER",
                   help="folder for 00000.png, 00001.png, ... (numbers continue after files already there; made "
                        "when the first PNG is written) (required)")
    g.add_argument("--save-tokens", action="store_true",
                   help="also write OUTPUT/tokens.safetensors (tokens_NNNNN.safetensors if that exists)")
    g.set_defaults(parser=g, func=cmd_generate)

    d = command("decode", "tokens.safetensors -> images (PNG)")
    model_args(d, lm=False)
    d.add_argument("--tokens", required=True, metavar="FILE", help="a token file from generate --save-tokens, encode "
                   "or the Save Janus Tokens node (required)")
    d.add_argument("--output", required=True, metavar="FOLDER", help="folder for the PNGs (numbers continue after "
                   "files already there; made when the first PNG is written) (required)")
    d.set_defaults(parser=d, func=cmd_decode)

    e = command("encode", "images -> tokens.safetensors (short side to 384, centre crop)")
    model_args(e, lm=False)
    e.add_argument("--image", required=True, nargs="+", metavar="FILE", help="image files, any size and mode "
                   "(required)")
    e.add_argument("--output", required=True, metavar="FILE",
                   help="the .safetensors file to write (an existing one is refused) (required)")
    e.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    e.set_defaults(parser=e, func=cmd_encode)

    u = command("describe", "images + question -> one text answer per image (image understanding)")
    model_args(u, vq=False)  # understanding never runs the VQ
    u.add_argument("--image", required=True, nargs="+", metavar="FILE", help="image files, any size and mode "
                   "(required)")
    u.add_argument("--question", default="Describe this image in detail.", help="what to ask about each image")
    u.add_argument("--seed", type=int, default=0, help="random seed when --temperature > 0; image i uses seed + i")
    u.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the same answer every time); higher "
                   "= more varied wording")
    u.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling probability mass when --temperature > "
                   "0; 1.0 = off")
    u.add_argument("--max-new-tokens", type=int, default=512, help="longest answer in tokens; capped, with a note, "
                   "to what the model's context leaves after the question and image")
    u.add_argument("--system-prompt", default=None, help="the system prompt; '' = none (default: the official "
                   "processor's)")
    u.add_argument("--json", action="store_true", help='print [{"image": ..., "answer": ...}] as JSON')
    u.set_defaults(parser=u, func=cmd_describe)

    c = command("convert", "original pytorch_model*.bin checkpoint -> safetensors, same layout")
    c.add_argument("--model", required=True, metavar="FOLDER", help="a checkpoint folder with pytorch_model.bin or "
                   "pytorch_model-*.bin shards (read as plain tensors only) (required)")
    c.add_argument("--output", required=True, metavar="FOLDER", help="a new or empty folder for the safetensors copy "
                   "(same shards, tensor names and config files; nothing is overwritten) (required)")
    c.set_defaults(parser=c, func=cmd_convert)
    return p


_INPUT_ALIASES = {"images": "image"}  # library input names whose CLI option is spelled differently


def cli_message(exc: JanusError, parser: argparse.ArgumentParser | None) -> str:
    """The error's text with the input it names written as the command's option (`batch_size` -> `--batch-size`):
    the leading name, and every mention of a snake_case name (a plain word like `prompt` only where it leads,
    so prose such as "the prompt's tokens" stays prose)."""
    import re

    text, name = str(exc), exc.input
    if not name or parser is None:
        return text
    flag = "--" + _INPUT_ALIASES.get(name, name).replace("_", "-")
    if flag not in parser._option_string_actions:  # not an option of this command (e.g. init_tokens)
        return text
    where = rf"(?<![\w-]){re.escape(name)}(?![\w-])" if "_" in name else rf"^{re.escape(name)}(?![\w-])"
    return re.sub(where, flag, text)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)  # usage errors: argparse prints "error: ..." and exits 2
    try:
        threads = getattr(args, "threads", None)
        if threads is not None:
            import os

            import torch

            cores = os.cpu_count() or 1
            if not 1 <= threads <= 4 * cores:
                raise SettingError(f"--threads must be in 1..{4 * cores} (this machine has {cores} cores), got "
                                   f"{threads}; leave it out for torch's choice.", input="threads")
            torch.set_num_threads(threads)
        return args.func(args)
    except JanusError as exc:
        TerminalProgress.finish_line()
        print(f"error: {cli_message(exc, getattr(args, 'parser', None))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        TerminalProgress.finish_line()
        print("interrupted: nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        TerminalProgress.finish_line()
        print("error: out of memory; lower --batch-size or use a smaller --dtype.", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        import torch

        if not isinstance(exc, torch.OutOfMemoryError):
            raise  # a bug: the traceback is what a report needs
        TerminalProgress.finish_line()
        print(f"error: out of memory on {args.device} ({str(exc).splitlines()[0]}); lower --batch-size or use a "
              "smaller --dtype.", file=sys.stderr)
        return EXIT_ERROR
