"""Janus Prompt (CFG): the conditional and unconditional rows -> JANUS_COND."""

from __future__ import annotations

from ..janus_core import prepare_cond
from .errors import for_input, input_error


class JanusARPrompt:
    CATEGORY = "Janus"
    DESCRIPTION = ("Builds the two token rows classifier-free guidance needs: the prompt in the checkpoint's chat "
                   "template, and the unconditional row (the reference's pad-token row when negative_prompt is "
                   "empty, otherwise the negative prompt in the same template). Janus makes 384x384 images only.")
    RETURN_TYPES = ("JANUS_COND",)
    RETURN_NAMES = ("cond",)
    OUTPUT_TOOLTIPS = ("Token ids of the conditional and unconditional rows, tied to this model's tokenizer.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lm": ("JANUS_LM", {"tooltip": "The model from Janus Model Loader (its tokenizer and prompt format)."}),
                "prompt": ("STRING", {"multiline": True, "dynamicPrompts": True,
                                      "default": "a watercolor painting of a red fox in a snowy forest",
                                      "tooltip": "What to draw."}),
                "negative_prompt": ("STRING", {"multiline": True, "dynamicPrompts": True, "default": "",
                                               "tooltip": "What to steer away from. Empty = the reference "
                                                          "unconditional row (recommended)."}),
            },
        }

    def encode(self, lm, prompt, negative_prompt=""):
        if not hasattr(lm, "tokenizer") or not hasattr(lm, "identity"):
            raise input_error("Janus Prompt", "lm", f"expected JANUS_LM from Janus Model Loader, got "
                                                    f"{type(lm).__name__}.")
        with for_input("Janus Prompt", "prompt"):
            return (prepare_cond(lm, prompt, negative_prompt or ""),)
