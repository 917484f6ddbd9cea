"""Janus Model Loader: find / download / load a checkpoint -> JANUS_LM, JANUS_VQ."""

from __future__ import annotations

from pathlib import Path

import torch

from . import events, host, models


def download_tqdm(node_id):
    """A tqdm class for huggingface_hub that mirrors download progress into the editor."""
    from tqdm.auto import tqdm

    class JanusDownloadProgress(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False
            super().__init__(*args, **kwargs)
            self._bar = host.progress_bar(int(self.total or 0) or 1, node_id)

        def update(self, n=1):
            out = super().update(n)
            total = int(self.total) if self.total else None
            if self._bar is not None:
                self._bar.update_absolute(int(self.n), total or max(int(self.n), 1))
            events.send_download_progress(node_id, str(self.desc or ""), int(self.n), total)
            return out

    return JanusDownloadProgress


def _cpu_auto() -> str:
    from ..janus_core.loader import auto_dtype_reason

    dtype, why = auto_dtype_reason(torch.device("cpu"))
    return f"{str(dtype).replace('torch.', '')} ({why})"


class JanusARLoader:
    CATEGORY = "Janus"
    DESCRIPTION = ("Loads a Janus / Janus-Pro checkpoint for text-to-image: the language model with its image head "
                   "(JANUS_LM) and the VQ-16 image tokenizer (JANUS_VQ). Folders come from models/Janus-Pro/ (and "
                   "extra_model_paths.yaml key 'Janus-Pro'); known repo ids download there on first use. "
                   "One loaded copy per checkpoint, dtype, device and quantize choice is shared by every loader that asks.")
    RETURN_TYPES = ("JANUS_LM", "JANUS_VQ")
    RETURN_NAMES = ("lm", "vq")
    OUTPUT_TOOLTIPS = ("The language model with its image-generation head, tokenizer and prompt format.",
                       "The VQ-16 image tokenizer: turns image tokens into pixels (and pixels into tokens).")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (models.model_choices(), {
                    "tooltip": "A checkpoint folder under models/Janus-Pro/ (config.json, tokenizer.json, weights), "
                               "or a known Hugging Face repo id, downloaded into models/Janus-Pro/ on first use."}),
                "dtype": (models.DTYPE_CHOICES, {
                    "default": "auto",
                    "tooltip": "Weight precision. auto: on GPUs the editor's choice (bfloat16/float16 where "
                               "supported); on the CPU bfloat16 where the CPU has native bfloat16 (AVX512-BF16 / "
                               "AMX: about twice as fast), else float32. float32 is the reference-exact choice. "
                               f"On this machine's CPU auto means {_cpu_auto()}."}),
                "device": (models.DEVICE_CHOICES, {
                    "default": "auto",
                    "tooltip": "Where the model runs. auto = the editor's device (its --cpu etc. flags apply)."}),
            },
            "optional": {  # optional, so workflows and API prompts saved before it existed still validate
                "quantize": (models.QUANTIZE_CHOICES, {
                    "default": "none",
                    "tooltip": "Weight-only quantization of the language model's linear layers (embeddings, norms "
                               "and the VQ keep dtype). none: exact. int8: about half the memory of bfloat16 "
                               "(Janus-Pro-7B's generation model ~6.2 GB instead of ~12.3 GB), ~1.5x faster "
                               "than float32 on the CPU, a small change in the images. int4: about a third "
                               "(7B ~3.9 GB), the same CPU speed as int8, images differ clearly. Measured speed "
                               "and fidelity: benchmarks/README.md."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model):
        return models.validate_model_choice(model)

    @classmethod
    def IS_CHANGED(cls, model, dtype="auto", device="auto", quantize="none", **_hidden):  # + unique_id
        """Re-run when the chosen folder's files change (a replaced or completed checkpoint)."""
        folder = models.local_checkpoints().get(model)
        if folder is None and model in models.KNOWN_REPOS:
            folder = next((p for p in (Path(r) / models.local_name(model) for r in host.model_folders())
                           if p.is_dir()), None)
        return models.folder_signature(folder) if folder is not None else ""

    def load(self, model, dtype="auto", device="auto", quantize="none", unique_id=None):
        folder = models.resolve_checkpoint(model, tqdm_class=download_tqdm(unique_id))
        return models.load_models(folder, dtype, device, quantize)
