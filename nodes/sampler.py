"""Janus Token Sampler: the autoregressive loop with CFG -> JANUS_TOKENS, with progress, preview and cancel."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ..janus_core import (
    GRID,
    NUM_IMAGE_TOKENS,
    GenerationCancelled,
    sample_tokens,
    token_preview,
)
from ..janus_core.sampler import (
    ZIPAR_WINDOW,
    auto_decoding,
    check_cond,
    check_sampling_memory,
    decoding_settings,
)
from ..janus_core.validate import sampler_settings
from ..janus_core.vq import check_tokens
from . import events, host, models
from .errors import for_input, input_error

NODE = "Janus Token Sampler"
PROGRESS_EVERY = 4  # tokens per progress update (each update is also a cancel point in the editor)
PREVIEW_EVERY = GRID  # one preview per row of 24 tokens at most ...
PREVIEW_MIN_INTERVAL_S = 0.25  # ... and at most four per second
PREVIEW_SIZE = 384  # 16 px per token, like the decoded image
PREVIEW_MAX_SIZE = PREVIEW_SIZE  # the editor scales previews up to fit this box: a larger one mislabels the size


def mask_to_regenerate(mask: torch.Tensor) -> torch.Tensor:
    """MASK [B, H, W] or [H, W], any size -> bool [B, 24, 24], True = regenerate (mask value >= 0.5).

    The mask is aligned the way Janus VQ Encode crops an image (centre square), then averaged onto the
    24x24 token grid (area resampling; bilinear when the mask is smaller than the grid)."""
    if not isinstance(mask, torch.Tensor):
        raise input_error(NODE, "mask", f"expected a MASK tensor, got {type(mask).__name__}.")
    m = mask.float()
    if not bool(torch.isfinite(m).all()):
        raise input_error(NODE, "mask", "holds NaN or infinite values; fix the node that made the mask.")
    if m.dim() == 2:
        m = m[None]
    if m.dim() == 4 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.dim() != 3 or 0 in m.shape:
        raise input_error(NODE, "mask", f"expected a MASK [B, H, W], got shape {tuple(mask.shape)}.")
    h, w = m.shape[-2:]
    s = min(h, w)
    m = m[:, (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    mode = "area" if s >= GRID else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(m[:, None].cpu(), size=(GRID, GRID), mode=mode, **kwargs)[:, 0] >= 0.5


class _Progress:
    """janus_core progress callback -> editor progress bar (+ live preview) and the web status line."""

    def __init__(self, node_id, batch: int, palette: torch.Tensor | None, clock=time.perf_counter):
        self.bar = host.progress_bar(NUM_IMAGE_TOKENS, node_id)
        self.status = events.SamplerStatus(node_id, NUM_IMAGE_TOKENS, batch)
        self.palette = palette if self.bar is not None else None
        self.clock = clock
        self.last_preview = None
        self.preview_seconds = 0.0
        self.previews = 0

    def preview(self, so_far: torch.Tensor):
        t0 = self.clock()
        from PIL import Image

        grid = token_preview(self.palette, so_far[:1], upscale=1)[0]  # 24x24; PIL upscales far faster than torch
        image = Image.fromarray(grid.numpy()).resize((PREVIEW_SIZE, PREVIEW_SIZE), Image.NEAREST)
        self.preview_seconds += self.clock() - t0
        self.previews += 1
        return ("JPEG", image, PREVIEW_MAX_SIZE)

    def __call__(self, step: int, total: int, so_far: torch.Tensor) -> None:
        self.status.update(step)
        if self.bar is None:
            return
        preview = None
        if self.palette is not None and (step % PREVIEW_EVERY == 0 or step == total):
            now = self.clock()
            if step == total or self.last_preview is None or now - self.last_preview >= PREVIEW_MIN_INTERVAL_S:
                self.last_preview = now
                preview = self.preview(so_far)
        self.bar.update_absolute(step, total, preview)


def _oom_message(what: str, batch: int, dtype: torch.dtype, device) -> str:
    dt = str(dtype).replace("torch.", "")
    return (f"Out of memory while {what} (batch_size {batch}, {dt} on {device}). The memory has been released. "
            f"Lower batch_size, or load the model in a smaller dtype (bfloat16 / float16) with Janus Model Loader, "
            f"or choose device cpu.")


class JanusARSampler:
    CATEGORY = "Janus"
    DESCRIPTION = ("Samples the 576 image tokens (a 24x24 grid, 384x384 pixels) autoregressively with "
                   "classifier-free guidance. Image i of a batch with seed s equals a batch of one with seed s+i. "
                   "Optional init_tokens + mask regenerate only part of an image: mask value >= 0.5 (white) "
                   "means regenerate, < 0.5 keeps the init token. Shows a live colour preview while sampling.")
    RETURN_TYPES = ("JANUS_TOKENS",)
    RETURN_NAMES = ("tokens",)
    OUTPUT_TOOLTIPS = ("Image tokens [batch, 24, 24] on the CPU with their seeds, settings and producing model.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lm": ("JANUS_LM", {"tooltip": "The model from Janus Model Loader."}),
                "cond": ("JANUS_COND", {"tooltip": "Prompt rows from Janus Prompt (CFG), made with the same model."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "Random seed. Image i of the batch uses seed + i, so any image can be "
                                            "re-made alone."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64,
                                       "tooltip": "Images sampled together (each costs two rows: cond + uncond)."}),
                "cfg": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 20.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Guidance weight: uncond + cfg * (cond - uncond). 1 = no guidance; "
                                             "the reference uses 5."}),
                "temperature": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 10.0, "step": 0.01,
                                          "tooltip": "Softmax temperature (> 0). Lower = safer, less varied."}),
                "top_k": ("INT", {"default": 0, "min": 0, "max": 16384,
                                  "tooltip": "Sample only among the k most likely tokens. 0 = off (the reference)."}),
                "top_p": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                    "tooltip": "Nucleus sampling: smallest token set with this probability mass. "
                                               "1 = off (the reference)."}),
            },
            "optional": {
                "init_tokens": ("JANUS_TOKENS", {"tooltip": "Tokens to start from (e.g. Janus VQ Encode of an "
                                                            "image); positions the mask keeps are copied."}),
                "mask": ("MASK", {"tooltip": "Which part to regenerate, any size (resampled to the 24x24 token "
                                             "grid, centre square): >= 0.5 (white) = regenerate, < 0.5 = keep the "
                                             "init token. Needs init_tokens."}),
                # added last and optional: workflows saved before it run unchanged (as "auto")
                "decoding": (["auto", "sequential", "jacobi", "jacobi_grouped", "zipar"], {
                    "default": "auto",
                    "tooltip": "How the tokens are computed; the tokens are the same either way (up to rare "
                               "floating-point near-ties). jacobi: speculative Jacobi decoding, each forward "
                               "guesses 16 positions and keeps those the model confirms, with the sampler's own "
                               "random numbers fixed per position: the same image in fewer forwards (kept mask "
                               "regions are free). sequential: one forward per token (the reference procedure). "
                               "auto: on the CPU jacobi, with one-token steps wherever the window does not pay "
                               "(judged from the window's cost, measured once per machine and kept, so a rerun "
                               "makes the same image); on a GPU sequential. jacobi_grouped (lossy, changes the "
                               "image): jacobi that also keeps a guess close to the model's pick (GSD), for fewer "
                               f"forwards. zipar (lossy, changes the image): rows decoded in parallel, each "
                               f"{ZIPAR_WINDOW} tokens behind the row above (ZipAR): {23 * ZIPAR_WINDOW + 24} "
                               "forwards instead of 576."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def sample(self, lm, cond, seed, batch_size, cfg, temperature, top_k, top_p, init_tokens=None, mask=None,
               decoding="auto", unique_id=None):
        with for_input(NODE, "decoding"):
            _, window, _ = decoding_settings(decoding, None, "up")
        with for_input(NODE, "cond"):
            check_cond(lm, cond)
            settings = sampler_settings(seed=seed, batch_size=batch_size, cfg=cfg, temperature=temperature,
                                        top_k=top_k, top_p=top_p)
        if settings["temperature"] == 0:
            raise input_error(NODE, "temperature", "must be > 0 (at least 0.01); the node samples, it is not greedy.")
        batch_size = settings["batch_size"]
        init = keep = None
        if init_tokens is not None or mask is not None:
            if init_tokens is None:
                raise input_error(NODE, "init_tokens", "a mask is connected but no init_tokens; connect the "
                                                       "tokens to start from (e.g. Janus VQ Encode).")
            if mask is None:
                raise input_error(NODE, "mask", "init_tokens are connected but no mask; connect a MASK "
                                                "(white = regenerate).")
            with for_input(NODE, "init_tokens"):
                init = check_tokens(init_tokens, lm.model.image_vocab, "init_tokens")
            keep = ~mask_to_regenerate(mask)
            for name, t in (("init_tokens", init), ("mask", keep)):
                if t.shape[0] not in (1, batch_size):
                    raise input_error(NODE, name, f"has batch {t.shape[0]}; expected 1 or batch_size {batch_size}.")
        with for_input(NODE, "batch_size"):  # refuse a batch that cannot fit before moving the model
            runs = auto_decoding(lm) if decoding == "auto" else decoding
            check_sampling_memory(lm, batch_size, max(len(cond.cond_ids), len(cond.uncond_ids)), runs, window)

        models.ensure_on_device(lm)
        palette, _ = models.palette_for(lm.identity.as_dict(), lm.model.image_vocab)
        progress = _Progress(unique_id, batch_size, palette)
        state, failure = "error", None
        try:
            tokens = sample_tokens(lm, cond, **settings, init_tokens=init, keep_mask=keep, progress=progress,
                                   progress_every=PROGRESS_EVERY, should_cancel=host.interrupted, decoding=decoding)
            state = "success"
        except GenerationCancelled as exc:
            state, failure = "cancelled", str(exc)
        except torch.OutOfMemoryError:
            failure = _oom_message("sampling", batch_size, lm.dtype, lm.device)
        except Exception as exc:
            if type(exc).__name__ == "InterruptProcessingException":
                state = "cancelled"
                host.release_memory()
            raise
        finally:
            progress.status.finish(state)
        if state == "success":
            return (tokens,)
        host.release_memory()  # outside the except block: the failed frames are gone by now
        if state == "cancelled":
            exc = host.interrupt_exception(failure)
            raise exc if exc is not None else GenerationCancelled(failure)
        raise host.JanusOutOfMemoryError(failure)
