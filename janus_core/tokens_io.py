"""JANUS_TOKENS to and from `.safetensors` (tensor `tokens`, int64 [B, 24, 24]; metadata as JSON strings).
Token files are safetensors only: no pickles."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .errors import PayloadError
from .payloads import JanusTokens

_META_FIELDS = ("seeds", "settings", "model", "prompt")
FORMAT = "janus_tokens/1"


def save_tokens(tokens: JanusTokens, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {name: json.dumps(getattr(tokens, name), default=str) for name in _META_FIELDS}
    meta["format"] = FORMAT
    save_file({"tokens": tokens.tokens.to(torch.int64).contiguous()}, str(path), metadata=meta)
    return path


def load_tokens(path: str | Path) -> JanusTokens:
    path = Path(path)
    if path.suffix != ".safetensors":
        raise PayloadError(f"{path.name}: token files must be .safetensors.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types across versions
        raise PayloadError(f"{path}: not a readable safetensors file ({exc}).") from exc
    if "tokens" not in tensors:
        raise PayloadError(f"{path.name} holds no 'tokens' tensor (found: {', '.join(tensors) or 'none'}); "
                           "it was not written by Save Janus Tokens / --save-tokens.")
    t = tensors["tokens"]
    if t.dim() != 3 or tuple(t.shape[1:]) != (24, 24) or t.dtype.is_floating_point:
        raise PayloadError(f"{path.name}: 'tokens' has shape {tuple(t.shape)} and dtype {t.dtype}; expected integer "
                           "[B, 24, 24] (384x384 images).")
    fields = {}
    for name in _META_FIELDS:
        try:
            fields[name] = json.loads(meta[name]) if name in meta else None
        except ValueError:
            fields[name] = None
    seeds = fields["seeds"] if isinstance(fields["seeds"], list) else [None] * t.shape[0]
    return JanusTokens(tokens=t.to(torch.int64), seeds=seeds, settings=fields["settings"] or {},
                       model=fields["model"] or {}, prompt=fields["prompt"] or "")
