"""Light stand-ins for the editor modules the pack touches (comfy.*, folder_paths, server).

They mimic the behaviour the pack relies on (ComfyUI 0.3.x): ProgressBar calls a global hook whose server
implementation first raises InterruptProcessingException when an interrupt is pending; load_models_gpu takes
ModelPatcher objects and moves them to their load device; unload_all_models moves them back.
"""

from __future__ import annotations

import os
import types

import torch


class Recorder:
    def __init__(self):
        self.calls: list[tuple] = []
        self.messages: list[tuple[str, dict]] = []
        self.progress: list[tuple[int, int, object]] = []
        self.interrupt = False
        self.interrupt_at: int | None = None  # set the interrupt flag when progress reaches this step


def make_modules(base: str, rec: Recorder) -> dict[str, types.ModuleType]:
    # ---- folder_paths
    fp = types.ModuleType("folder_paths")
    fp.base_path = base
    fp.models_dir = os.path.join(base, "models")
    fp.folder_names_and_paths = {}

    def add_model_folder_path(name, path, is_default=False):
        paths = fp.folder_names_and_paths.setdefault(name, ([], set()))[0]
        if path in paths:
            paths.remove(path)
        paths.insert(0, path) if is_default else paths.append(path)

    fp.add_model_folder_path = add_model_folder_path
    fp.get_folder_paths = lambda name: list(fp.folder_names_and_paths[name][0])
    fp.get_output_directory = lambda: os.path.join(base, "output")
    fp.get_input_directory = lambda: os.path.join(base, "input")
    fp.get_temp_directory = lambda: os.path.join(base, "temp")

    # ---- comfy.model_management
    mm = types.ModuleType("comfy.model_management")

    class InterruptProcessingException(Exception):
        pass

    mm.InterruptProcessingException = InterruptProcessingException
    mm.OOM_EXCEPTION = torch.OutOfMemoryError
    mm.current_loaded_models = []
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.unet_offload_device = lambda: torch.device("cpu")
    mm.should_use_bf16 = lambda device=None, *a, **k: False
    mm.should_use_fp16 = lambda device=None, *a, **k: False

    def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        rec.calls.append(("load_models_gpu", list(models), force_full_load))
        for m in models:
            m.model.to(m.load_device)
            m.model.device = m.load_device
            if m not in mm.current_loaded_models:
                mm.current_loaded_models.insert(0, m)

    def unload_all_models():
        rec.calls.append(("unload_all_models",))
        while mm.current_loaded_models:
            patcher = mm.current_loaded_models.pop()
            rec.calls.append(("detach", type(patcher.model).__name__))
            patcher.detach()

    def soft_empty_cache(force=False):
        rec.calls.append(("soft_empty_cache", force))

    def processing_interrupted():
        return rec.interrupt

    def interrupt_current_processing(value=True):
        rec.interrupt = value

    def throw_exception_if_processing_interrupted():
        if rec.interrupt:
            rec.interrupt = False
            raise InterruptProcessingException()

    mm.load_models_gpu = load_models_gpu
    mm.unload_all_models = unload_all_models
    mm.soft_empty_cache = soft_empty_cache
    mm.processing_interrupted = processing_interrupted
    mm.interrupt_current_processing = interrupt_current_processing
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted

    # ---- comfy.model_patcher
    mp = types.ModuleType("comfy.model_patcher")

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
            self.model, self.load_device, self.offload_device = model, load_device, offload_device
            self.size = size  # ComfyUI: model_size() returns it when > 0, else sums the state dict
            rec.calls.append(("ModelPatcher", type(model).__name__, str(load_device), str(offload_device)))

        def detach(self, unpatch_all=True):
            self.model.to(self.offload_device)
            self.model.device = self.offload_device

    mp.ModelPatcher = ModelPatcher

    # ---- comfy.utils
    cu = types.ModuleType("comfy.utils")
    cu.PROGRESS_BAR_HOOK = None

    def set_progress_bar_global_hook(fn):
        cu.PROGRESS_BAR_HOOK = fn

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total, self.current, self.node_id = total, 0, node_id
            self.hook = cu.PROGRESS_BAR_HOOK

        def update_absolute(self, value, total=None, preview=None):
            if total is not None:
                self.total = total
            self.current = min(value, self.total)
            if self.hook is not None:
                self.hook(self.current, self.total, preview, node_id=self.node_id)

        def update(self, value):
            self.update_absolute(self.current + value)

    def server_hook(value, total, preview, node_id=None):  # what ComfyUI's main.py installs
        if rec.interrupt_at is not None and value >= rec.interrupt_at:
            rec.interrupt = True
        throw_exception_if_processing_interrupted()
        rec.progress.append((value, total, preview))

    cu.ProgressBar = ProgressBar
    cu.set_progress_bar_global_hook = set_progress_bar_global_hook
    cu.PROGRESS_BAR_HOOK = server_hook

    comfy = types.ModuleType("comfy")
    comfy.__path__ = []
    comfy.model_management, comfy.model_patcher, comfy.utils = mm, mp, cu

    # ---- server
    srv = types.ModuleType("server")

    class PromptServer:
        instance = None

        def send_sync(self, event, data, sid=None):
            rec.messages.append((event, data))

    PromptServer.instance = PromptServer()
    srv.PromptServer = PromptServer

    return {"folder_paths": fp, "comfy": comfy, "comfy.model_management": mm, "comfy.model_patcher": mp,
            "comfy.utils": cu, "server": srv}
