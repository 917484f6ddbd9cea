"""Everything the pack asks of the host editor, imported lazily and optional.

Inside ComfyUI these reach `comfy.model_management`, `comfy.model_patcher`, `comfy.utils` and `folder_paths`;
outside (tests, scripts) every helper has a plain-Python fallback, so `janus_core` and the nodes run without it.
"""

from __future__ import annotations

import gc
import importlib
import os

import torch

MODEL_FOLDER_KEY = "Janus-Pro"


def _module(name: str):
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - absent outside the editor (or broken: then behave as without it)
        return None


def model_management():
    return _module("comfy.model_management")


def folder_paths():
    return _module("folder_paths")


def comfy_utils():
    return _module("comfy.utils")


def model_patcher_class():
    mp = _module("comfy.model_patcher")
    return getattr(mp, "ModelPatcher", None) if mp is not None else None


# ----------------------------------------------------------------------------------------------- folders

def _fallback_base() -> str:
    return os.path.abspath(os.environ.get("JANUS_COMFY_BASE", os.getcwd()))


def models_root() -> str:
    """The default `models/Janus-Pro` folder (downloads go here)."""
    fp = folder_paths()
    base = getattr(fp, "models_dir", None) if fp is not None else None
    if base is None:
        base = os.path.join(_fallback_base(), "models")
    return os.path.join(base, MODEL_FOLDER_KEY)


def register_model_folder() -> None:
    """Register the `Janus-Pro` model folder key, keeping paths users mapped in extra_model_paths.yaml."""
    fp = folder_paths()
    if fp is None:
        return
    default = models_root()
    table = getattr(fp, "folder_names_and_paths", None)
    if table is not None and MODEL_FOLDER_KEY in table:
        paths = table[MODEL_FOLDER_KEY][0]
        if not any(os.path.normcase(os.path.abspath(p)) == os.path.normcase(default) for p in paths):
            paths.append(default)
        return
    add = getattr(fp, "add_model_folder_path", None)
    if add is not None:
        add(MODEL_FOLDER_KEY, default)


def model_folders() -> list[str]:
    fp = folder_paths()
    roots: list[str] = []
    if fp is not None:
        try:
            roots = list(fp.get_folder_paths(MODEL_FOLDER_KEY))
        except Exception:  # noqa: BLE001 - key not registered (older editors raise KeyError, others differ)
            roots = []
    default = models_root()
    if default not in roots:
        roots.append(default)
    return roots


def output_directory() -> str:
    fp = folder_paths()
    if fp is not None and hasattr(fp, "get_output_directory"):
        return fp.get_output_directory()
    return os.path.join(_fallback_base(), "output")


def input_directory() -> str:
    fp = folder_paths()
    if fp is not None and hasattr(fp, "get_input_directory"):
        return fp.get_input_directory()
    return os.path.join(_fallback_base(), "input")


# ----------------------------------------------------------------------------------------------- devices

def auto_device() -> torch.device:
    mm = model_management()
    if mm is not None and hasattr(mm, "get_torch_device"):
        return torch.device(mm.get_torch_device())
    from ..janus_core import resolve_device

    return resolve_device("auto")


def offload_device(load_device: torch.device) -> torch.device:
    if load_device.type == "cpu":
        return load_device
    mm = model_management()
    if mm is not None and hasattr(mm, "unet_offload_device"):
        return torch.device(mm.unet_offload_device())
    return torch.device("cpu")


def auto_dtype(device: torch.device) -> torch.dtype:
    """On a GPU the editor's bf16/fp16 policy for `device` when it has one, else janus_core's. On the CPU always
    janus_core's (bfloat16 where the CPU has native bf16 products, else float32): the editor's CPU policy is
    made for its convolution-heavy models, not for a decode loop bound by streaming weights."""
    mm = model_management()
    if device.type != "cpu" and mm is not None and hasattr(mm, "should_use_bf16") and hasattr(mm, "should_use_fp16"):
        try:
            if mm.should_use_bf16(device):
                return torch.bfloat16
            if mm.should_use_fp16(device):
                return torch.float16
            return torch.float32
        except Exception:  # noqa: BLE001, S110 - an editor whose policy cannot judge this device: use ours
            pass
    from ..janus_core import resolve_dtype

    return resolve_dtype("auto", device)


# ----------------------------------------------------------------------------------------------- memory

def make_patcher(module: torch.nn.Module, load_device: torch.device, offload: torch.device, size: int = 0):
    """Wrap `module` in the editor's ModelPatcher (None outside the editor). `size`: the bytes it takes on the
    load device (the editor would otherwise sum its state dict, counting host-resident tables too)."""
    cls = model_patcher_class()
    if cls is None:
        return None
    from ..janus_core.model import device_parameters

    module.device = next(device_parameters(module)).device  # where the weights are now
    return cls(module, load_device=load_device, offload_device=offload, size=size)


def load_to_device(patcher) -> None:
    """Ask the editor's memory manager to put the model (or a list of models, together) on its load device
    (freeing others if needed)."""
    mm = model_management()
    if mm is None or not patcher:
        return
    patchers = list(patcher) if isinstance(patcher, (list, tuple)) else [patcher]
    try:
        mm.load_models_gpu(patchers, force_full_load=True)  # our layers have no lowvram weight casting
    except TypeError:
        mm.load_models_gpu(patchers)


def release_memory() -> None:
    gc.collect()
    mm = model_management()
    if mm is not None and hasattr(mm, "soft_empty_cache"):
        try:
            mm.soft_empty_cache(True)
            return
        except Exception:  # noqa: BLE001, S110 - fall back to torch's own cache release
            pass
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------- progress / cancel

def progress_bar(total: int, node_id=None):
    cu = comfy_utils()
    if cu is None or not hasattr(cu, "ProgressBar"):
        return None
    try:
        return cu.ProgressBar(total, node_id=node_id)
    except TypeError:  # older editors: no node_id
        return cu.ProgressBar(total)


def progress_hook_active() -> bool:
    cu = comfy_utils()
    return cu is not None and getattr(cu, "PROGRESS_BAR_HOOK", None) is not None


def interrupted() -> bool:
    mm = model_management()
    fn = getattr(mm, "processing_interrupted", None) if mm is not None else None
    return bool(fn()) if fn is not None else False


def interrupt_exception(message: str) -> Exception | None:
    mm = model_management()
    cls = getattr(mm, "InterruptProcessingException", None) if mm is not None else None
    if cls is None:
        return None
    try:
        return cls(message)
    except TypeError:
        return cls()


class JanusOutOfMemoryError(torch.OutOfMemoryError):
    """Out of memory in a Janus node; a torch OOM so the editor applies its own OOM handling too."""
