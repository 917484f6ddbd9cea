"""The editor nodes: thin classes over janus_core, one module per stage."""

from __future__ import annotations

from . import host
from .describe import JanusARDescribe
from .loader import JanusARLoader
from .prompt import JanusARPrompt
from .sampler import JanusARSampler
from .tokens import (
    JanusARLoadTokens,
    JanusARSaveTokens,
    JanusARTokenMap,
    JanusARTokensInfo,
)
from .vq import JanusARDecode, JanusAREncode

host.register_model_folder()

NODE_CLASS_MAPPINGS = {
    "JanusARLoader": JanusARLoader,
    "JanusARPrompt": JanusARPrompt,
    "JanusARSampler": JanusARSampler,
    "JanusARDecode": JanusARDecode,
    "JanusAREncode": JanusAREncode,
    "JanusARTokenMap": JanusARTokenMap,
    "JanusARTokensInfo": JanusARTokensInfo,
    "JanusARSaveTokens": JanusARSaveTokens,
    "JanusARLoadTokens": JanusARLoadTokens,
    "JanusARDescribe": JanusARDescribe,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "JanusARLoader": "Janus Model Loader",
    "JanusARPrompt": "Janus Prompt (CFG)",
    "JanusARSampler": "Janus Token Sampler",
    "JanusARDecode": "Janus VQ Decode",
    "JanusAREncode": "Janus VQ Encode",
    "JanusARTokenMap": "Janus Token Map",
    "JanusARTokensInfo": "Janus Tokens Info",
    "JanusARSaveTokens": "Save Janus Tokens",
    "JanusARLoadTokens": "Load Janus Tokens",
    "JanusARDescribe": "Janus Describe Image",
}
