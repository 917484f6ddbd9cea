"""Janus Describe Image: image understanding (IMAGE + question -> one STRING per image), with progress and cancel."""

from __future__ import annotations

import logging

import torch

from ..janus_core import GenerationCancelled, JanusError, describe
from . import events, host, models
from .errors import input_error
from .sampler import _oom_message

NODE = "Janus Describe Image"
DEFAULT_QUESTION = "Describe this image in detail."


class _Progress:
    """Per-token progress bar (max_new_tokens steps; it jumps to the end when every answer has stopped) and the
    web status line (tokens, tok/s, ETA, images), like the sampler's, with a note when the answer is capped."""

    def __init__(self, node_id, total: int, batch: int):
        self.bar = host.progress_bar(total, node_id)
        self.status = events.SamplerStatus(node_id, total, batch)
        self.notes: list[str] = []

    def __call__(self, step: int, total: int, _tokens) -> None:
        self.status.total = total  # the answer length once capped to the context
        self.status.update(step)
        if self.bar is not None:
            self.bar.update_absolute(step, total)

    def notice(self, message: str) -> None:
        self.notes.append(message)
        self.status.note = message
        logging.getLogger(__name__).warning("%s: %s", NODE, message)

    def finish(self, total: int) -> None:
        if self.bar is not None:
            self.bar.update_absolute(total, total)


class JanusARDescribe:
    CATEGORY = "Janus"
    DESCRIPTION = ("Answers a question about each image with the model's image understanding (SigLIP tower + the "
                   "language model's text head, loaded the first time this node runs). Any image size: the long "
                   "side is resized to 384 and padded to a square. A batch gives one answer per image.")
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("text",)
    OUTPUT_IS_LIST = (True,)  # one string per image; a batch of one is a plain STRING downstream
    OUTPUT_TOOLTIPS = ("One answer per image of the batch (a list: nodes after this run once per answer).",)
    OUTPUT_NODE = True  # the answers are shown on the node, so it runs without anything connected after it
    FUNCTION = "describe"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lm": ("JANUS_LM", {"tooltip": "The model from Janus Model Loader (its tower, aligner and text head "
                                               "are loaded on first use)."}),
                "image": ("IMAGE", {"tooltip": "Images to describe, any size; a batch gives one answer per image."}),
                "question": ("STRING", {"multiline": True, "default": DEFAULT_QUESTION,
                                        "tooltip": "What to ask about each image."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "Random seed when temperature > 0; image i of the batch uses seed + i."}),
                "temperature": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 2.0, "step": 0.05, "round": 0.01,
                                          "tooltip": "0 = greedy (the same answer every time, as the official "
                                                     "README); higher = more varied wording."}),
                "top_p": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                    "tooltip": "Nucleus sampling when temperature > 0: smallest word set with this "
                                               "probability mass. 1 = off."}),
                "max_new_tokens": ("INT", {"default": 512, "min": 1, "max": 4096,
                                           "tooltip": "Longest answer in tokens (about 3/4 of a word each); it "
                                                      "stops earlier at the end of the answer."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def describe(self, lm, image, question, seed, temperature, top_p, max_new_tokens, unique_id=None):
        if isinstance(image, (list, tuple)):  # several IMAGE batches (a list input): one answer per image
            image = [im for batch in image for im in (batch if isinstance(batch, torch.Tensor) and batch.dim() == 4
                                                      else [batch])]
        if not isinstance(question, str) or not question.strip():
            raise input_error(NODE, "question", "is empty; type a question, e.g. 'Describe this image in detail.'")
        und = models.understanding_of(lm)
        models.ensure_on_device(lm, und)
        rows = len(image) if isinstance(image, list) else int(getattr(image, "shape", [1])[0] or 1)
        progress = _Progress(unique_id, int(max_new_tokens), rows)
        failure = cancelled = None
        state = "error"
        try:
            texts = describe(lm, image, question, seed=int(seed), temperature=float(temperature), top_p=float(top_p),
                             max_new_tokens=int(max_new_tokens), progress=progress, should_cancel=host.interrupted,
                             understanding=und, notice=progress.notice)
            state = "success"
        except GenerationCancelled as exc:
            state, cancelled = "cancelled", str(exc)
        except JanusError as exc:  # janus_core names the input first ("question is empty", "images[0] ...")
            text = str(exc)
            named = ("question", "temperature", "top_p", "max_new_tokens", "seed")
            name = {"images": "image"}.get(exc.input, exc.input) or next((n for n in named if text.startswith(n)),
                                                                          "image")
            raise input_error(NODE, name, text) from exc
        except torch.OutOfMemoryError:
            failure = _oom_message("describing", rows, lm.dtype, lm.device).replace(
                "Lower batch_size", "Describe fewer images at once, lower max_new_tokens")
        except Exception as exc:
            if type(exc).__name__ == "InterruptProcessingException":  # the editor's cancel, raised by its progress hook
                state = "cancelled"
                host.release_memory()
            raise
        finally:
            progress.status.finish(state)
        if state == "success":
            progress.finish(int(max_new_tokens))
            ui = {"text": texts}
            if progress.notes:  # shown under the answers on the node (web/js/janus.js)
                ui["janus_notes"] = progress.notes
            return {"ui": ui, "result": (texts,)}
        host.release_memory()  # outside the except block: the failed frames are gone by now
        if cancelled is not None:
            exc = host.interrupt_exception(cancelled)
            raise exc if exc is not None else GenerationCancelled(cancelled)
        raise host.JanusOutOfMemoryError(failure)
