"""Checkpoint layout detection and the language-model dimensions read from `config.json`.

Two layouts exist (reference/janus-architecture.md §1.2 and §8): DeepSeek's original
(`model_type: multi_modality`, LLM settings under `language_config`) and the transformers port
(`model_type: janus`, LLM settings under `text_config`). Unset Llama keys fall back to
`transformers.LlamaConfig` defaults, which the original 7B config relies on.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError

ORIGINAL = "original"
TRANSFORMERS = "transformers"

# transformers.LlamaConfig defaults (the original configs list only what differs from these).
_LLAMA_DEFAULTS = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "max_position_embeddings": 2048,
    "hidden_act": "silu",
}


@dataclass(frozen=True)
class LMConfig:
    """Dimensions of the Llama decoder used for image generation."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int


@dataclass(frozen=True)
class CheckpointConfig:
    layout: str  # ORIGINAL or TRANSFORMERS
    lm: LMConfig
    raw: dict  # the parsed config.json, kept for identity and prompt-format detection


def _rope_theta(cfg: dict, where: str):
    # transformers 5 writes `rope_parameters`; older files write `rope_theta` (+ optional `rope_scaling`).
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or None
    if not isinstance(params, dict) or not isinstance(scaling or {}, dict):
        raise CheckpointError(f"{where}: rope_parameters / rope_scaling must be JSON objects.")
    rope_type = params.get("rope_type") or (scaling or {}).get("rope_type") or (scaling or {}).get("type")
    if rope_type not in (None, "default"):
        raise CheckpointError(
            f"config.json asks for RoPE scaling type {rope_type!r}; only plain RoPE (as in every released "
            "Janus checkpoint) is supported."
        )
    return params.get("rope_theta", cfg.get("rope_theta", _LLAMA_DEFAULTS["rope_theta"]))


_INT_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "max_position_embeddings")
_LIMITS = {"vocab_size": 10_000_000, "hidden_size": 65536, "intermediate_size": 1 << 20, "num_hidden_layers": 1024,
           "num_attention_heads": 1024, "max_position_embeddings": 1 << 24}


def _positive_int(cfg: dict, key: str, where: str, default=None) -> int:
    value = cfg.get(key)
    if value is None:
        value = default if default is not None else _LLAMA_DEFAULTS[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _LIMITS.get(key, 1 << 24):
        raise CheckpointError(f"{where}: {key} must be a positive whole number, got {value!r} "
                              f"({type(value).__name__}). The config is damaged or not a Janus config; re-download it.")
    return value


def _positive_float(cfg: dict, key: str, where: str, value=None) -> float:
    if value is None:
        value = cfg.get(key) if cfg.get(key) is not None else _LLAMA_DEFAULTS[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise CheckpointError(f"{where}: {key} must be a positive finite number, got {value!r} "
                              f"({type(value).__name__}). The config is damaged; re-download it.")
    return float(value)


def _lm_config(cfg, where: str) -> LMConfig:
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{where}: the language model settings must be a JSON object, got {type(cfg).__name__}.")
    if cfg.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{where}: hidden_act {cfg['hidden_act']!r} is not supported (Janus uses 'silu').")
    ints = {k: _positive_int(cfg, k, where) for k in _INT_KEYS}
    heads, hidden = ints["num_attention_heads"], ints["hidden_size"]
    kv_heads = _positive_int(cfg, "num_key_value_heads", where, default=heads)
    head_dim = _positive_int(cfg, "head_dim", where, default=max(1, hidden // heads))
    if heads % kv_heads:
        raise CheckpointError(f"{where}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}.")
    if head_dim % 2:
        raise CheckpointError(f"{where}: head_dim {head_dim} is odd; rotary embeddings need an even head size.")
    return LMConfig(
        vocab_size=ints["vocab_size"],
        hidden_size=hidden,
        intermediate_size=ints["intermediate_size"],
        num_layers=ints["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=_positive_float(cfg, "rms_norm_eps", where),
        rope_theta=_positive_float(cfg, "rope_theta", where, _rope_theta(cfg, where)),
        max_position_embeddings=ints["max_position_embeddings"],
    )


def read_checkpoint_config(folder: str | Path) -> CheckpointConfig:
    """Parse `folder/config.json` and detect the layout. Raises CheckpointError with the file named."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise CheckpointError(
            f"{path} not found. A Janus checkpoint folder needs config.json, tokenizer.json and the weight files "
            "(model.safetensors, model-*.safetensors + index, pytorch_model.bin or pytorch_model-*.bin + index)."
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}). Re-download it.") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} must hold a JSON object (the model's settings), got a JSON "
                              f"{type(raw).__name__}. The file is damaged or not a model config; re-download it.")
    model_type = raw.get("model_type")
    if model_type == "multi_modality":
        if "language_config" not in raw:
            raise CheckpointError(f"{path}: model_type multi_modality but no language_config.")
        return CheckpointConfig(ORIGINAL, _lm_config(raw["language_config"], str(path)), raw)
    if model_type == "janus":
        if "text_config" not in raw:
            raise CheckpointError(f"{path}: model_type janus but no text_config.")
        return CheckpointConfig(TRANSFORMERS, _lm_config(raw["text_config"], str(path)), raw)
    raise CheckpointError(
        f"{path}: unknown checkpoint layout (model_type {model_type!r}). Expected 'multi_modality' (DeepSeek's "
        "original Janus / Janus-Pro repos) or 'janus' (the transformers port, deepseek-community/*)."
    )
