"""JANUS_TOKENS to and from `.safetensors` (tensor `tokens`, int64 [B, 24, 24]; metadata as JSON strings).
Token files are safetensors only: no pickles."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from .errors import PayloadError
from .files import make_dirs, remove_empty_dirs, write_bytes
from .payloads import JanusTokens

_META_FIELDS = ("seeds", "settings", "model", "prompt")
FORMAT = "janus_tokens/1"


def save_tokens(tokens: JanusTokens, path: str | Path, overwrite: bool = False) -> Path:
    """Write `tokens` to a new .safetensors file, atomically (temporary name, then linked into place).
    An existing file is refused (OutputError) unless `overwrite`. Missing folders are created; a failed save
    removes those it created."""
    if not isinstance(tokens, JanusTokens):
        raise PayloadError(f"tokens must be JANUS_TOKENS, got {type(tokens).__name__}.")
    path = Path(path)
    meta = {name: json.dumps(getattr(tokens, name), default=str) for name in _META_FIELDS}
    meta["format"] = FORMAT
    data = save({"tokens": tokens.tokens.to(torch.int64).contiguous()}, metadata=meta)
    created = make_dirs(path.parent)
    try:
        return write_bytes(path, data, overwrite)
    except BaseException:
        remove_empty_dirs(created)  # a failed save leaves no empty folder behind
        raise


def load_tokens(path: str | Path) -> JanusTokens:
    path = Path(path)
    if path.suffix != ".safetensors":
        raise PayloadError(f"{path.name}: token files must be .safetensors.")
    if not path.is_file():
        raise PayloadError(f"{path}: no such token file.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types across versions
        raise PayloadError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0] if str(exc) else exc!r}); "
                           "it is truncated or not a token file.") from None
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
    # metadata of the wrong type (hand-edited or foreign files) is dropped, never trusted
    seeds = fields["seeds"]
    if not (isinstance(seeds, list) and len(seeds) == t.shape[0]
            and all(s is None or (isinstance(s, int) and not isinstance(s, bool)) for s in seeds)):
        seeds = [None] * t.shape[0]
    pick = lambda name, kind, empty: fields[name] if isinstance(fields[name], kind) else empty  # noqa: E731
    return JanusTokens(tokens=t.to(torch.int64), seeds=seeds, settings=pick("settings", dict, {}),
                       model=pick("model", dict, {}), prompt=pick("prompt", str, ""))
