"""Load what a task needs from a checkpoint folder of either layout, strictly and tensor by tensor.

A folder is opened once as a `Checkpoint` (config, tokenizer, weight reader, key maps, identity, key-set
check); every part is built from that one object. Generation loads the LLM body + final norm, the text
embedding table (for the prompt) and the generation embedding / aligner / head (`load_generator`), and the
VQ decoder (`load_vq`). The LM head and the understanding tower are never read for generation; the VQ
encoder only with `with_encoder=True`; the tower, aligner and LM head only by `load_understanding`
(the first time an image is described).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from .config import ORIGINAL, read_checkpoint_config
from .errors import CheckpointError, DeviceError, SettingError
from .hub import DEMO_NAMES, demo_folder
from .model import JanusGenerator, Linear
from .payloads import JanusLM, JanusVQ, ModelIdentity
from .quantize import check_quantize
from .prompt import FORMATS, PromptTokenizer, detect_prompt_format
from .vision import ImagePreprocess, JanusUnderstanding, UnderstandingModel, VisionConfig
from .vq_model import VQModel
from .weights import (
    WeightReader,
    aligner_depth,
    classify_unexpected,
    fingerprint,
    generator_sources,
    understanding_sources,
    unexpected_understanding_keys,
    vision_block_count,
    vq_key_map,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LoadProgress = Callable[[int, int], None]


def available_devices() -> list[str]:
    """The devices torch can use on this machine, as `--device` accepts them."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """auto: CUDA, then MPS, then the CPU. A device that does not exist or is not available here is refused with
    the list of those that are (DeviceError)."""
    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    have = ", ".join(["auto", *available_devices()])
    try:
        dev = device if isinstance(device, torch.device) else torch.device(str(device).strip())
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"device {device!r} is not a device name; available here: {have}.", input="device") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {str(dev)!r}: torch sees no CUDA GPU on this machine (a CPU-only torch build, "
                              f"or no driver); available here: {have}.", input="device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {str(dev)!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s); "
                              f"available here: {have}.", input="device")
        return dev
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise DeviceError(f"device 'mps': Apple's MPS is not available on this machine; available here: {have}.",
                              input="device")
        return dev
    raise DeviceError(f"device {str(dev)!r} is not supported (Janus runs on cpu, cuda and mps); available here: "
                      f"{have}.", input="device")


def cpu_bf16_instructions() -> str | None:
    """The native bfloat16 dot-product instructions of this CPU ("AMX-BF16", "AVX512-BF16"), or None."""
    cpu = getattr(torch, "cpu", None)
    if cpu is not None and getattr(cpu, "_is_amx_tile_supported", lambda: False)():
        return "AMX-BF16"
    if cpu is not None and getattr(cpu, "_is_avx512_bf16_supported", lambda: False)():
        return "AVX512-BF16"
    return None


def auto_dtype_reason(device: torch.device) -> tuple[torch.dtype, str]:
    """What dtype="auto" means on `device`, and why (the CLI prints it, the loader node's tooltip says it).

    On the CPU: bfloat16 where the CPU multiplies it natively (AVX512-BF16 or AMX-BF16): a decode step streams
    half the bytes and runs about 1.7-2x faster than float32 (an AMD EPYC with AVX512-BF16, and an Intel Xeon
    with AMX, benchmarks/README.md); without those instructions bfloat16 is converted in software and is ~1.5x
    slower than float32 (an AVX2 EPYC), so float32. float32 stays the reference-exact choice anywhere."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "this GPU supports bfloat16"
        return torch.float32, "this GPU has no bfloat16"
    if device.type == "mps":
        return torch.float16, "MPS runs float16 natively"
    native = cpu_bf16_instructions()
    if native:
        return torch.bfloat16, (f"this CPU has {native}, so bfloat16 products are about twice as fast as float32; "
                                "use float32 for the reference-exact path")
    return torch.float32, "this CPU has no native bfloat16 (AVX512-BF16 / AMX), where float32 is the faster"


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """auto: see `auto_dtype_reason` (bf16 on CUDA with bf16 support, fp16 on MPS, bf16 on CPUs with native bf16,
    else fp32)."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise SettingError(f"dtype must be float32, bfloat16 or float16; got {dtype}.", input="dtype")
        return dtype
    if dtype in (None, "", "auto"):
        return auto_dtype_reason(device)[0]
    if dtype not in DTYPES:
        raise SettingError(f"dtype must be auto, float32, bfloat16 or float16; got {dtype!r}.", input="dtype")
    if DTYPES[dtype] == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise SettingError(f"dtype bfloat16 is not supported by this GPU ({torch.cuda.get_device_name(device)}); "
                           "use float16 or auto.", input="dtype")
    return DTYPES[dtype]


def resolve_vq_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """auto for the VQ: bf16 on CUDA with bf16 support, fp32 elsewhere (half-precision convs are slow on CPU)."""
    if dtype in (None, "", "auto") and device.type != "cuda":
        return torch.float32
    return resolve_dtype(dtype, device)


@contextmanager
def bare_modules():
    """Build modules on the meta device without running their random init: the weights are read right after,
    and meta-device init kernels would pull in torch's compiler stack (seconds and ~70 MB) for nothing."""
    classes = (nn.Linear, nn.Embedding, nn.Conv2d, nn.LayerNorm)
    saved = {cls: cls.reset_parameters for cls in classes}
    for cls in classes:
        cls.reset_parameters = lambda self: None
    try:
        with torch.device("meta"):
            yield
    finally:
        for cls, fn in saved.items():
            cls.reset_parameters = fn


class Checkpoint:
    """One checkpoint folder, opened once: parsed config, tokenizer, weight reader, key maps and identity.

    Every part (generator, VQ, and later the understanding tower) is built from this object, so the config is
    parsed, the weight headers read and the key set checked exactly once per load. Use as a context manager or
    call `close()`; `open_checkpoint` accepts an already open one and leaves it open."""

    def __init__(self, folder: str | Path):
        if str(folder) in DEMO_NAMES:
            folder = demo_folder()
        self.folder = Path(folder)
        self.config = read_checkpoint_config(self.folder)
        self.layout = self.config.layout
        self.reader = WeightReader(self.folder)
        self.generator_sources = generator_sources(self.layout, self.config.lm.num_layers)
        self.vq_names = vq_key_map(self.layout, self.reader.shapes)  # original-style VQ name -> checkpoint key
        self.vq_shapes = {n: self.reader.shapes[k] for n, k in self.vq_names.items()}
        self._tokenizer = None
        self._identity = None
        self._check_unexpected()

    # -- shared pieces, computed once --------------------------------------------------------------------
    @property
    def tokenizer(self) -> PromptTokenizer:
        if self._tokenizer is None:
            self._tokenizer = PromptTokenizer(self.folder / "tokenizer.json")
        return self._tokenizer

    @property
    def identity(self) -> ModelIdentity:
        if self._identity is None:
            self._identity = ModelIdentity(path=str(self.folder.resolve()),
                                           fingerprint=fingerprint(self.folder, self.reader.files),
                                           name=self.folder.name)
        return self._identity

    @property
    def has_vq_encoder(self) -> bool:
        return "encoder.conv_in.weight" in self.vq_shapes

    def vq_module(self, with_encoder: bool) -> VQModel:
        """A meta-device VQ built from the tensor shapes."""
        if "quantize.embedding.weight" not in self.vq_shapes:
            raise CheckpointError(f"{self.folder}: no VQ codebook (quantize.embedding.weight) in the weights; "
                                  "this checkpoint has no image tokenizer.")
        try:
            with bare_modules():
                vq = VQModel(self.vq_shapes, with_encoder=with_encoder)
        except KeyError as exc:
            raise CheckpointError(f"{self.folder}: VQ tensor {exc.args[0]!r} missing.") from exc
        errors = vq.shape_errors()
        if errors:
            raise CheckpointError(f"{self.folder}: the VQ tensors do not fit together: {'; '.join(errors[:3])}. The "
                                  "weight files are damaged or mix different models; re-download them.")
        return vq

    def _check_unexpected(self) -> None:
        """Every key must be one a task knows, in a component a task skips, or documented as unused."""
        expected = {k for keys in self.generator_sources.values() for k in keys}
        vq = self.vq_module(with_encoder=self.has_vq_encoder)
        expected |= {self.vq_names[n] for n in vq.state_dict() if n in self.vq_names}
        bad = classify_unexpected(self.layout, self.reader.shapes, expected)
        if bad:
            shown = ", ".join(f"{k!r} in {self.reader.file_of(k).name}" for k in bad[:5])
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise CheckpointError(f"{self.folder}: unexpected tensors {shown}{more}. The files do not match "
                                  "config.json (another model, or a different layer count).")

    # -- reading -------------------------------------------------------------------------------------------
    def fill(self, module: nn.Module, sources: dict[str, tuple[str, ...]], device, dtype,
             progress: LoadProgress | None = None, quantize: str = "none", quantize_only: str = "") -> None:
        """Read every parameter of a meta-device `module` from its source keys, casting as we go, and assign it.
        Several source keys for one parameter are concatenated along dim 0 (fused q/k/v, gate/up).

        quantize "int8" / "int4": the weight of every `model.Linear` is read into one full-precision staging
        tensor, quantized at once (`Linear.set_quantized`) and the staging freed before the next tensor is read, so
        no full-precision copy of the model ever exists. Other parameters (embeddings, norms, biases) keep `dtype`.
        `quantize_only`: quantize only the weights whose names start with this prefix. Tables of host-resident
        modules (`HostEmbedding`) go to the CPU whatever `device` is."""
        quantize = check_quantize(quantize)
        reader = self.reader
        params = dict(module.named_parameters())
        cpu = torch.device("cpu")
        for n, (name, meta) in enumerate(params.items()):
            keys = sources[name]
            parts = []
            for key in keys:
                if key not in reader.shapes:
                    raise CheckpointError(f"{self.folder}: missing tensor {key!r} (needed for {name}); the files "
                                          f"({', '.join(f.name for f in reader.files)}) are incomplete or of another "
                                          "model.")
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
            owner_name, _, leaf = name.rpartition(".")
            owner = module.get_submodule(owner_name)
            where = cpu if getattr(owner, "host_resident", False) else device
            dest = torch.empty(meta.shape, dtype=dtype, device=where)
            offset = 0
            for key, shape in zip(keys, parts):
                reader.copy_into(key, dest[offset : offset + shape[0]])
                offset += shape[0]
            if quantize != "none" and isinstance(owner, Linear) and leaf == "weight" and name.startswith(quantize_only):
                owner.set_quantized(quantize, dest)
            else:
                setattr(owner, leaf, nn.Parameter(dest, requires_grad=False))
            del dest
            if progress is not None:
                progress(n + 1, len(params))
        module.requires_grad_(False).eval()

    def close(self) -> None:
        self.reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextmanager
def open_checkpoint(source: str | Path | Checkpoint):
    """Yield an open Checkpoint for a folder (closed afterwards) or an already open one (left open)."""
    if isinstance(source, Checkpoint):
        yield source
        return
    with Checkpoint(source) as ckpt:
        yield ckpt


def build_generator(ckpt: Checkpoint, dtype, device, prompt_format: str = "auto",
                    progress: LoadProgress | None = None, quantize: str = "none") -> JanusLM:
    quantize = check_quantize(quantize)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    if prompt_format not in (None, "", "auto") and prompt_format not in FORMATS:
        raise SettingError(f"prompt_format must be auto, {' or '.join(FORMATS)}; got {prompt_format!r}.",
                           input="prompt_format")
    tokenizer = ckpt.tokenizer
    if tokenizer.max_id >= ckpt.config.lm.vocab_size:
        raise CheckpointError(f"{ckpt.folder}: tokenizer.json produces ids up to {tokenizer.max_id}, but the model's "
                              f"text embedding has only {ckpt.config.lm.vocab_size} rows (vocab_size in config.json). "
                              "The tokenizer belongs to another model; re-download both from the same repo.")
    embed_key = ckpt.generator_sources["gen_embed.weight"][0]
    if embed_key not in ckpt.reader.shapes:
        raise CheckpointError(f"{ckpt.folder}: missing tensor {embed_key!r}; this checkpoint has no image "
                              "generation head.")
    image_vocab, image_embed_dim = ckpt.reader.shapes[embed_key]
    with bare_modules():
        model = JanusGenerator(ckpt.config.lm, image_vocab, image_embed_dim)
    ckpt.fill(model, ckpt.generator_sources, device, dtype, progress, quantize=quantize)
    if prompt_format in (None, "", "auto"):
        prompt_format = detect_prompt_format(tokenizer, ckpt.config.raw, ckpt.folder.name)
    return JanusLM(model=model, tokenizer=tokenizer, prompt_format=prompt_format, identity=ckpt.identity,
                   device=device, dtype=dtype, quantize=quantize)


def build_vq(ckpt: Checkpoint, dtype, device, with_encoder: bool = False,
             progress: LoadProgress | None = None) -> JanusVQ:
    device = resolve_device(device)
    dtype = resolve_vq_dtype(dtype, device)
    if with_encoder and not ckpt.has_vq_encoder:
        raise CheckpointError(f"{ckpt.folder}: this checkpoint has no VQ encoder tensors; it can decode but not "
                              "encode.")
    vq = ckpt.vq_module(with_encoder)
    missing = [n for n, _ in vq.named_parameters() if n not in ckpt.vq_names]
    if missing:
        raise CheckpointError(f"{ckpt.folder}: missing VQ tensor(s) {', '.join(missing[:5])}.")
    sources = {n: (ckpt.vq_names[n],) for n, _ in vq.named_parameters()}
    ckpt.fill(vq, sources, device, dtype, progress)
    return JanusVQ(model=vq, identity=ckpt.identity, device=device, dtype=dtype)


def load_generator(folder: str | Path | Checkpoint, dtype="auto", device="auto", prompt_format: str = "auto",
                   progress: LoadProgress | None = None, quantize: str = "none") -> JanusLM:
    """Load the text-to-image language model of a checkpoint folder (JANUS_LM).

    quantize: "none", "int8" or "int4" weight-only quantization of every linear layer (quantize.py); `dtype` is
    then the dtype of everything else (embeddings, norms, activations, KV cache)."""
    quantize = check_quantize(quantize)
    device = resolve_device(device)  # settings first: a wrong device fails before any file is read
    dtype = resolve_dtype(dtype, device)
    with open_checkpoint(folder) as ckpt:
        return build_generator(ckpt, dtype, device, prompt_format, progress, quantize)


def load_vq(folder: str | Path | Checkpoint, dtype="auto", device="auto", with_encoder: bool = False,
            progress: LoadProgress | None = None) -> JanusVQ:
    """Load the VQ-16 decoder (and the encoder when asked) of a checkpoint folder (JANUS_VQ)."""
    device = resolve_device(device)
    dtype = resolve_vq_dtype(dtype, device)
    with open_checkpoint(folder) as ckpt:
        return build_vq(ckpt, dtype, device, with_encoder, progress)


def load(folder: str | Path | Checkpoint, dtype="auto", device="auto", vq_dtype="auto", with_encoder: bool = False,
         prompt_format: str = "auto", progress: LoadProgress | None = None,
         quantize: str = "none") -> tuple[JanusLM, JanusVQ]:
    """Both halves of text-to-image from one opened checkpoint (one pass over the weight files).
    quantize ("none" | "int8" | "int4") applies to the language model's linear layers only (see load_generator)."""
    quantize = check_quantize(quantize)
    device = resolve_device(device)
    dtype, vq_dtype = resolve_dtype(dtype, device), resolve_vq_dtype(vq_dtype, device)
    with open_checkpoint(folder) as ckpt:
        lm = build_generator(ckpt, dtype, device, prompt_format, progress, quantize)
        vq = build_vq(ckpt, vq_dtype, device, with_encoder)
    return lm, vq


# SigLIP variants the original configs name (`vision_config.params.model_name`): width -> attention heads.
_SIGLIP_HEADS = {"siglip_large_patch16_384": (1024, 16), "siglip_so400m_patch14_384": (1152, 16)}
SIGLIP_HEAD_DIM = 64  # the head width of the SigLIP-L tower; used for towers the table does not name (test models)


def understanding_config(ckpt: Checkpoint) -> VisionConfig:
    """Tower and aligner dimensions from the tensor shapes; heads, norm eps and the block count from config.json."""
    layout, shapes, raw = ckpt.layout, ckpt.reader.shapes, ckpt.config.raw
    sources = understanding_sources(layout, 0, 1)
    patch_key, pos_key = sources["vision.patch_embed.weight"][0], sources["vision.pos_embed"][0]
    for key in (patch_key, pos_key, sources["lm_head.weight"][0]):
        if key not in shapes:
            raise CheckpointError(f"{ckpt.folder}: missing tensor {key!r}; this checkpoint has no image-understanding "
                                  "tower / text head, so it cannot describe images.")
    width, _, patch, _ = shapes[patch_key]
    pos_shape = tuple(shapes[pos_key])
    stored = vision_block_count(layout, shapes)
    if layout == ORIGINAL:
        params = (raw.get("vision_config") or {}).get("params") or {}
        # the official CLIPVisionTower: select_layer <= 0 counts from the end (-1 = every block), default -2
        select = int(params.get("select_layer", -2))
        depth = min(stored, stored + select + 1) if select <= 0 else min(stored, select)
        named = _SIGLIP_HEADS.get(params.get("model_name"))
        heads = named[1] if named and named[0] == width else max(1, width // SIGLIP_HEAD_DIM)
        eps = 1e-6
    else:
        vc = raw.get("vision_config") or {}
        if vc.get("hidden_act", "gelu") != "gelu" or vc.get("use_qk_norm", False):
            raise CheckpointError(f"{ckpt.folder}: vision_config asks for hidden_act {vc.get('hidden_act')!r} / "
                                  f"use_qk_norm {vc.get('use_qk_norm')!r}; only the released tower (exact GELU, no "
                                  "q/k norm) is supported.")
        depth = int(vc.get("num_hidden_layers", stored))
        heads = int(vc.get("num_attention_heads", 16))
        eps = float(vc.get("layer_norm_eps", 1e-6))
    if depth < 1 or depth > stored or width % heads:
        raise CheckpointError(f"{ckpt.folder}: the vision tower config (depth {depth}, {heads} heads) does not fit "
                              f"the weights ({stored} blocks, width {width}).")
    fc1 = understanding_sources(layout, 1, 1)["vision.blocks.0.mlp.fc1.weight"][0]
    n_align = aligner_depth(layout, shapes)
    if fc1 not in shapes or n_align < 1:
        raise CheckpointError(f"{ckpt.folder}: vision tower block 0 or the aligner is missing from the weights.")
    align = understanding_sources(layout, 0, n_align)
    dims = (width, *(shapes[align[f"aligner.fcs.{j}.weight"][0]][0] for j in range(n_align)))
    if dims[-1] != ckpt.config.lm.hidden_size:
        raise CheckpointError(f"{ckpt.folder}: the aligner outputs {dims[-1]} features but the LLM is "
                              f"{ckpt.config.lm.hidden_size} wide; the files belong to different models.")
    positions = int(torch.Size(pos_shape).numel()) // width
    return VisionConfig(width=width, depth=depth, heads=heads, patch=patch, num_positions=positions,
                        mlp_hidden=shapes[fc1][0], layer_norm_eps=eps, pos_shape=pos_shape, aligner_dims=dims)


def read_preprocess(folder: Path) -> ImagePreprocess:
    """preprocessor_config.json in the original (`image_size`) or the transformers (`size.height`) spelling."""
    path = Path(folder) / "preprocessor_config.json"
    if not path.is_file():
        return ImagePreprocess()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}). Re-download it.") from exc
    d = ImagePreprocess()
    size = raw.get("image_size") or (raw.get("size") or {}).get("height") or d.image_size
    try:
        return ImagePreprocess(
            image_size=int(size), min_size=int(raw.get("min_size", d.min_size)),
            image_mean=tuple(float(x) for x in raw.get("image_mean") or d.image_mean),
            image_std=tuple(float(x) for x in raw.get("image_std") or d.image_std),
            rescale_factor=float(raw.get("rescale_factor", d.rescale_factor)),
            do_normalize=bool(raw.get("do_normalize", d.do_normalize)),
        )
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable image settings ({exc}).") from exc


def build_understanding(ckpt: Checkpoint, dtype, device, progress: LoadProgress | None = None,
                        quantize: str = "none") -> JanusUnderstanding:
    """The vision tower, aligner and text head of a checkpoint (what Janus Describe Image adds to generation).
    `quantize` applies to the text head only (it is the language model's, 0.4-0.8 GB in bf16, and follows the
    language model's choice); the tower and aligner stay exact, as the VQ does for generation."""
    quantize = check_quantize(quantize)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    cfg = understanding_config(ckpt)
    sources = understanding_sources(ckpt.layout, cfg.depth, len(cfg.aligner_dims) - 1)
    expected = {k for keys in sources.values() for k in keys}
    bad = unexpected_understanding_keys(ckpt.layout, ckpt.reader.shapes, expected, cfg.depth)
    if bad:
        raise CheckpointError(f"{ckpt.folder}: unexpected vision tensors {', '.join(map(repr, bad[:5]))}"
                              f"{f' and {len(bad) - 5} more' if len(bad) > 5 else ''}; the tower in the files does "
                              "not match config.json.")
    preprocess = read_preprocess(ckpt.folder)
    if preprocess.image_size != cfg.image_size:
        raise CheckpointError(f"{ckpt.folder}: preprocessor_config.json resizes to {preprocess.image_size} px but the "
                              f"tower's {cfg.num_positions} positions of {cfg.patch} px need {cfg.image_size} px.")
    with bare_modules():
        model = UnderstandingModel(cfg, ckpt.config.lm.hidden_size, ckpt.config.lm.vocab_size)
    ckpt.fill(model, sources, device, dtype, progress, quantize=quantize, quantize_only="lm_head.")
    return JanusUnderstanding(model=model, preprocess=preprocess, identity=ckpt.identity, device=device, dtype=dtype)


def load_understanding(folder: str | Path | Checkpoint, dtype="auto", device="auto",
                       progress: LoadProgress | None = None, quantize: str = "none") -> JanusUnderstanding:
    """Load only the understanding parts of a checkpoint folder (the generation model loads separately)."""
    with open_checkpoint(folder) as ckpt:
        return build_understanding(ckpt, dtype, device, progress, quantize)
