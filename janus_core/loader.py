"""Load what a task needs from a checkpoint folder of either layout, strictly and tensor by tensor.

Generation loads the LLM body + final norm, the text embedding table (for the prompt) and the
generation embedding / aligner / head (`load_generator`), and the VQ decoder (`load_vq`). The LM head
and the understanding tower are never read; the VQ encoder only with `with_encoder=True`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from .config import read_checkpoint_config
from .errors import CheckpointError
from .model import JanusGenerator
from .payloads import JanusLM, JanusVQ, ModelIdentity
from .prompt import FORMATS, PromptTokenizer, detect_prompt_format
from .vq_model import VQModel
from .weights import WeightReader, classify_unexpected, fingerprint, generator_sources, vq_key_map

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LoadProgress = Callable[[int, int], None]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """auto: bf16 on CUDA with bf16 support, fp16 on MPS, fp32 otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "", "auto"):
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16 if device.type == "mps" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be auto, float32, bfloat16 or float16; got {dtype!r}")
    return DTYPES[dtype]


def resolve_vq_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """auto for the VQ: bf16 on CUDA with bf16 support, fp32 elsewhere (half-precision convs are slow on CPU)."""
    if dtype in (None, "", "auto") and device.type != "cuda":
        return torch.float32
    return resolve_dtype(dtype, device)


@contextmanager
def _bare_modules():
    """Build modules on the meta device without running their random init: the weights are read right after,
    and meta-device init kernels would pull in torch's compiler stack (seconds and ~70 MB) for nothing."""
    classes = (nn.Linear, nn.Embedding, nn.Conv2d)
    saved = {cls: cls.reset_parameters for cls in classes}
    for cls in classes:
        cls.reset_parameters = lambda self: None
    try:
        with torch.device("meta"):
            yield
    finally:
        for cls, fn in saved.items():
            cls.reset_parameters = fn


def _fill(module: nn.Module, reader: WeightReader, sources: dict[str, tuple[str, ...]], device, dtype,
          progress: LoadProgress | None) -> None:
    """Read every parameter of a meta-device `module` from its source keys, casting as we go, then assign."""
    state = {}
    params = dict(module.named_parameters())
    for n, (name, meta) in enumerate(params.items()):
        keys = sources[name]
        parts = []
        for key in keys:
            if key not in reader.shapes:
                raise CheckpointError(f"{reader.folder}: missing tensor {key!r} (needed for {name}); the files "
                                      f"({', '.join(f.name for f in reader.files)}) are incomplete or of another model.")
            parts.append(reader.shapes[key])
        total = sum(p[0] for p in parts) if len(parts) > 1 else None
        if (len(parts) == 1 and parts[0] != tuple(meta.shape)) or (
            len(parts) > 1 and (total != meta.shape[0] or any(p[1:] != tuple(meta.shape[1:]) for p in parts))
        ):
            bad = keys[0] if len(keys) == 1 else ", ".join(keys)
            raise CheckpointError(
                f"{reader.file_of(keys[0])}: tensor {bad} has shape {parts if len(parts) > 1 else parts[0]}, "
                f"expected {tuple(meta.shape)} from config.json. The config and weights do not belong together."
            )
        dest = torch.empty(meta.shape, dtype=dtype, device=device)
        offset = 0
        for key, shape in zip(keys, parts):
            reader.copy_into(key, dest[offset : offset + shape[0]])
            offset += shape[0]
        state[name] = dest
        if progress is not None:
            progress(n + 1, len(params))
    module.load_state_dict(state, strict=True, assign=True)
    module.requires_grad_(False).eval()


def _identity(folder: Path, reader: WeightReader) -> ModelIdentity:
    if reader.identity is None:  # once per reader: `load` builds both halves from one
        reader.identity = ModelIdentity(path=str(folder.resolve()), fingerprint=fingerprint(folder, reader.files),
                                        name=folder.name)
    return reader.identity


def _expected_vq_keys(layout: str, reader: WeightReader) -> tuple[dict, dict]:
    names = vq_key_map(layout, reader.shapes)
    if "quantize.embedding.weight" not in names:
        raise CheckpointError(f"{reader.folder}: no VQ codebook (quantize.embedding.weight) in the weights; "
                              "this checkpoint has no image tokenizer.")
    shapes = {n: reader.shapes[k] for n, k in names.items()}
    return names, shapes


def _check_unexpected(layout: str, reader: WeightReader, lm_layers: int) -> None:
    if reader.checked:  # once per reader
        return
    bad = classify_unexpected(layout, reader.shapes, _expected_keys(layout, lm_layers, reader))
    if bad:
        shown = ", ".join(f"{k!r} in {reader.file_of(k).name}" for k in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise CheckpointError(f"{reader.folder}: unexpected tensors {shown}{more}. The files do not match "
                              "config.json (another model, or a different layer count).")
    reader.checked = True


def _expected_keys(layout: str, lm_layers: int, reader: WeightReader) -> set[str]:
    """Every key the full text-to-image path knows: generator sources + all VQ tensors (encoder included)."""
    expected = {k for keys in generator_sources(layout, lm_layers).values() for k in keys}
    names, shapes = _expected_vq_keys(layout, reader)
    try:
        with _bare_modules():
            vq = VQModel(shapes, with_encoder="encoder.conv_in.weight" in shapes)
    except KeyError as exc:
        raise CheckpointError(f"{reader.folder}: VQ tensor {exc.args[0]!r} missing.") from exc
    expected |= {names[n] for n in vq.state_dict() if n in names}
    return expected


def load_generator(folder: str | Path, dtype="auto", device="auto", prompt_format: str = "auto",
                   progress: LoadProgress | None = None, reader: WeightReader | None = None) -> JanusLM:
    """Load the text-to-image language model of a checkpoint folder (JANUS_LM)."""
    folder = Path(folder)
    ckpt = read_checkpoint_config(folder)
    tokenizer = PromptTokenizer(folder / "tokenizer.json")
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    reader = reader or WeightReader(folder)
    _check_unexpected(ckpt.layout, reader, ckpt.lm.num_layers)
    sources = generator_sources(ckpt.layout, ckpt.lm.num_layers)
    embed_key = sources["gen_embed.weight"][0]
    if embed_key not in reader.shapes:
        raise CheckpointError(f"{folder}: missing tensor {embed_key!r}; this checkpoint has no image generation head.")
    image_vocab, image_embed_dim = reader.shapes[embed_key]
    with _bare_modules():
        model = JanusGenerator(ckpt.lm, image_vocab, image_embed_dim)
    _fill(model, reader, sources, device, dtype, progress)
    if prompt_format in (None, "", "auto"):
        prompt_format = detect_prompt_format(tokenizer, ckpt.raw, folder.name)
    elif prompt_format not in FORMATS:
        raise ValueError(f"prompt_format must be auto, {' or '.join(FORMATS)}; got {prompt_format!r}")
    return JanusLM(model=model, tokenizer=tokenizer, prompt_format=prompt_format,
                   identity=_identity(folder, reader), device=device, dtype=dtype)


def load_vq(folder: str | Path, dtype="auto", device="auto", with_encoder: bool = False,
            progress: LoadProgress | None = None, reader: WeightReader | None = None) -> JanusVQ:
    """Load the VQ-16 decoder (and the encoder when asked) of a checkpoint folder (JANUS_VQ)."""
    folder = Path(folder)
    ckpt = read_checkpoint_config(folder)
    device = resolve_device(device)
    dtype = resolve_vq_dtype(dtype, device)
    reader = reader or WeightReader(folder)
    _check_unexpected(ckpt.layout, reader, ckpt.lm.num_layers)
    names, shapes = _expected_vq_keys(ckpt.layout, reader)
    if with_encoder and "encoder.conv_in.weight" not in shapes:
        raise CheckpointError(f"{folder}: this checkpoint has no VQ encoder tensors; it can decode but not encode.")
    try:
        with _bare_modules():
            vq = VQModel(shapes, with_encoder=with_encoder)
    except KeyError as exc:
        raise CheckpointError(f"{folder}: VQ tensor {exc.args[0]!r} missing.") from exc
    sources = {n: (names[n],) for n, _ in vq.named_parameters() if n in names}
    missing = [n for n, _ in vq.named_parameters() if n not in names]
    if missing:
        raise CheckpointError(f"{folder}: missing VQ tensor(s) {', '.join(missing[:5])}.")
    _fill(vq, reader, sources, device, dtype, progress)
    return JanusVQ(model=vq, identity=_identity(folder, reader), device=device, dtype=dtype)


def load(folder: str | Path, dtype="auto", device="auto", vq_dtype="auto", with_encoder: bool = False,
         prompt_format: str = "auto", progress: LoadProgress | None = None) -> tuple[JanusLM, JanusVQ]:
    """Both halves of text-to-image from one pass over the weight files."""
    folder = Path(folder)
    reader = WeightReader(folder)
    try:
        lm = load_generator(folder, dtype, device, prompt_format, progress, reader)
        vq = load_vq(folder, vq_dtype, device, with_encoder, None, reader)
    finally:
        reader.close()
    return lm, vq
