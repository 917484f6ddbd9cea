"""Model folders, the loaded-model cache and the memory-manager registration (used by the loader and the stages).

- Choices: the bundled demo model ("janus-demo (bundled)", offline), every folder under any `Janus-Pro` model
  root holding config.json + tokenizer.json + weights, then janus_core.hub.KNOWN_REPOS (downloaded on first use
  into `models/Janus-Pro/<local name>`).
- One loaded copy per (checkpoint folder, dtype, device, quantize choice): weakly cached, so it lives exactly as long as some
  node output (or caller) holds it.
- Inside the editor each model is wrapped in a ModelPatcher; `ensure_on_device` calls `load_models_gpu` so
  "unload models" and low-VRAM offload work. Outside: plain `.to(device)`.
- The preview palette is fitted once per model and kept by the model's content fingerprint.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import weakref
from pathlib import Path

import torch

from ..janus_core import fit_token_palette, id_palette, load, load_generator, load_understanding, load_vq
from ..janus_core.errors import CheckpointError
from ..janus_core.hub import DEMO_NAMES, KNOWN_REPOS, demo_folder, is_complete, local_name, resolve_model
from ..janus_core.loader import resolve_device as core_resolve_device
from ..janus_core.model import device_parameters
from ..janus_core.quantize import QUANTIZE_CHOICES, check_quantize
from . import host
from .errors import for_input, input_error

DTYPE_CHOICES = ["auto", "bfloat16", "float16", "float32"]
QUANTIZE_CHOICES = list(QUANTIZE_CHOICES)
DEVICE_CHOICES = ["auto", "cpu", "cuda", "mps"]
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}

_LOCK = threading.RLock()
_LM_CACHE: weakref.WeakValueDictionary[tuple, object] = weakref.WeakValueDictionary()
_VQ_CACHE: weakref.WeakValueDictionary[tuple, object] = weakref.WeakValueDictionary()
_PATCHERS: weakref.WeakKeyDictionary[object, object] = weakref.WeakKeyDictionary()  # lm/vq -> ModelPatcher
_ENCODERS: weakref.WeakKeyDictionary[object, object] = weakref.WeakKeyDictionary()  # decoder vq -> vq + encoder
_UNDERSTANDING: weakref.WeakKeyDictionary[object, object] = weakref.WeakKeyDictionary()  # lm -> tower/aligner/head
_PALETTES: dict[str, torch.Tensor] = {}  # model fingerprint -> uint8 [codebook, 3]


def is_checkpoint_folder(path: Path) -> bool:
    """config.json + tokenizer.json + weights, every shard an index names (no half downloads)."""
    return is_complete(path)


def local_checkpoints() -> dict[str, Path]:
    """name -> folder, for every checkpoint folder directly under a model root (first root wins on clashes)."""
    found: dict[str, Path] = {}
    for root in host.model_folders():
        try:
            entries = sorted(os.scandir(root), key=lambda e: e.name.lower())
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") or entry.name in found or not entry.is_dir():
                continue
            if is_checkpoint_folder(Path(entry.path)):
                found[entry.name] = Path(entry.path)
    return found


DEMO_CHOICE = DEMO_NAMES[1]  # "janus-demo (bundled)": first, so a new user's graph runs offline at once


def model_choices() -> list[str]:
    local = local_checkpoints()
    return [DEMO_CHOICE] + [n for n in local if n != DEMO_CHOICE] + [r for r in KNOWN_REPOS if r not in local]


def validate_model_choice(model) -> bool | str:
    choices = model_choices()
    if model in choices:
        return True
    return (f"Janus Model Loader: model {model!r} is not among the offered choices. Put a checkpoint folder "
            f"(config.json, tokenizer.json, weights) in {host.models_root()}, or pick one of: {', '.join(choices)}.")


def resolve_checkpoint(model: str, tqdm_class=None) -> Path:
    """A choice -> its checkpoint folder (downloading a known repo id on first use)."""
    if validate_model_choice(model) is not True:
        raise CheckpointError(validate_model_choice(model))
    if model == DEMO_CHOICE:
        return demo_folder()
    local = local_checkpoints()
    if model in local:
        return local[model]
    for root in host.model_folders():  # a known repo already downloaded under any root
        folder = Path(root) / local_name(model)
        if is_checkpoint_folder(folder):
            return folder
    return resolve_model(model, host.models_root(), tqdm_class=tqdm_class)  # downloads or resumes


def resolve_device(device: str) -> torch.device:
    if device in (None, "", "auto"):
        return host.auto_device()
    with for_input("Janus Model Loader", "device"):
        return core_resolve_device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype in (None, "", "auto"):
        return host.auto_dtype(device)
    if dtype not in _DTYPES:
        raise input_error("Janus Model Loader", "dtype", f"must be one of {', '.join(DTYPE_CHOICES)}; got {dtype!r}.")
    return _DTYPES[dtype]


def _vq_dtype(dtype: str, lm_dtype: torch.dtype, device: torch.device):
    return lm_dtype if (dtype not in (None, "", "auto") or device.type == "cuda") else torch.float32


def device_bytes(module: torch.nn.Module) -> int:
    """Bytes the model occupies on its load device: quantized weights at their packed size, the host-resident
    text-embedding table not at all (it stays in RAM)."""
    return sum(p.numel() * p.element_size() for p in device_parameters(module))


def _register(obj, load_device: torch.device, offload: torch.device):
    """Wrap a freshly loaded payload in a ModelPatcher (told the model's true size on the device) and point the
    payload at its load device."""
    patcher = host.make_patcher(obj.model, load_device, offload, device_bytes(obj.model))
    if patcher is not None:
        _PATCHERS[obj] = patcher
    if obj.device != load_device:
        obj = dataclasses.replace(obj, device=load_device)
        if patcher is not None:
            _PATCHERS[obj] = patcher
    return obj


def patcher_of(obj):
    return _PATCHERS.get(obj)


def ensure_on_device(*objs) -> None:
    """Before running models: the editor's memory manager loads them (together, so loading one cannot evict
    another); without an editor, plain `.to(device)`."""
    patchers = [p for p in (_PATCHERS.get(o) for o in objs) if p is not None]
    host.load_to_device(patchers)
    for obj in objs:
        if _PATCHERS.get(obj) is not None:
            continue
        param = next(device_parameters(obj.model), None)
        if param is not None and param.device != obj.device:
            obj.model.to(obj.device)


def folder_signature(folder: Path) -> str:
    """Names, sizes and modification times of a checkpoint folder's files: changes when its files are replaced."""
    try:
        entries = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(folder) if e.is_file())
    except OSError:
        return ""
    return repr(entries)


def load_models(folder: Path, dtype: str = "auto", device: str = "auto", quantize: str = "none"):
    """(JanusLM, JanusVQ) of `folder`, one LM per (folder and its files, dtype, device, quantize) and one VQ per
    (folder and its files, dtype, device): the VQ does not depend on the quantize choice."""
    with for_input("Janus Model Loader", "quantize"):
        quantize = check_quantize(quantize)  # a SettingError naming the allowed values
    load_device = resolve_device(device)
    lm_dtype = resolve_dtype(dtype, load_device)
    vq_dtype = _vq_dtype(dtype, lm_dtype, load_device)
    key = (str(Path(folder).resolve()), folder_signature(Path(folder)), str(lm_dtype), str(load_device))
    lm_key = (*key, quantize)
    with _LOCK:
        lm, vq = _LM_CACHE.get(lm_key), _VQ_CACHE.get(key)
        if lm is not None and vq is not None:
            return lm, vq
        offload = host.offload_device(load_device) if host.model_patcher_class() is not None else load_device
        if lm is None and vq is None:
            lm, vq = load(folder, dtype=lm_dtype, device=offload, vq_dtype=vq_dtype, quantize=quantize)
            lm, vq = _register(lm, load_device, offload), _register(vq, load_device, offload)
        elif lm is None:
            lm = _register(load_generator(folder, dtype=lm_dtype, device=offload, quantize=quantize), load_device,
                           offload)
        else:
            vq = _register(load_vq(folder, dtype=vq_dtype, device=offload), load_device, offload)
        _LM_CACHE[lm_key], _VQ_CACHE[key] = lm, vq
        if vq.identity.fingerprint not in _PALETTES:
            ensure_on_device(vq)
            _PALETTES[vq.identity.fingerprint] = fit_token_palette(vq)
        return lm, vq


def vq_with_encoder(vq):
    """The encoder is loaded lazily, the first time Janus VQ Encode runs on this VQ (same dtype and device)."""
    if vq.model.encoder is not None:
        return vq
    with _LOCK:
        enc = _ENCODERS.get(vq)
        if enc is None:
            patcher = _PATCHERS.get(vq)
            offload = patcher.offload_device if patcher is not None else vq.device
            enc = load_vq(vq.identity.path, dtype=vq.dtype, device=offload, with_encoder=True)
            enc = _register(dataclasses.replace(enc, identity=vq.identity), vq.device, offload)
            _ENCODERS[vq] = enc
        return enc


def understanding_of(lm):
    """The vision tower, aligner and text head, loaded lazily the first time Janus Describe Image runs on this
    JANUS_LM (same dtype and device), registered with the memory manager like the other models."""
    with _LOCK:
        und = _UNDERSTANDING.get(lm)
        if und is None:
            patcher = _PATCHERS.get(lm)
            offload = patcher.offload_device if patcher is not None else lm.device
            und = load_understanding(lm.identity.path, dtype=lm.dtype, device=offload, quantize=lm.quantize)
            if und.identity.fingerprint != lm.identity.fingerprint:
                raise CheckpointError(f"{lm.identity.path}: the checkpoint files changed since the model was loaded; "
                                      "run Janus Model Loader again.")
            und = _register(dataclasses.replace(und, identity=lm.identity), lm.device, offload)
            _UNDERSTANDING[lm] = und
        return und


def palette_for(model: dict | None, codebook_size: int = 16384, vq=None) -> tuple[torch.Tensor, str]:
    """(uint8 [codebook, 3] palette, kind): the fitted palette of the producing model when known, else an id palette."""
    fp = (model or {}).get("fingerprint")
    if fp in _PALETTES:
        return _PALETTES[fp], "fitted"
    if vq is not None:
        if vq.identity.fingerprint not in _PALETTES:
            ensure_on_device(vq)
            _PALETTES[vq.identity.fingerprint] = fit_token_palette(vq)
        return _PALETTES[vq.identity.fingerprint], "fitted"
    return id_palette(codebook_size), "by id"


def clear_caches() -> None:
    """Forget every cached model and palette (tests)."""
    with _LOCK:
        _LM_CACHE.clear()
        _VQ_CACHE.clear()
        _PATCHERS.clear()
        _ENCODERS.clear()
        _UNDERSTANDING.clear()
        _PALETTES.clear()
