"""Checkpoint layout detection and the language-model dimensions read from `config.json`.

Two layouts exist (reference/janus-architecture.md §1.2 and §8): DeepSeek's original
(`model_type: multi_modality`, LLM settings under `language_config`) and the transformers port
(`model_type: janus`, LLM settings under `text_config`). Unset Llama keys fall back to
`transformers.LlamaConfig` defaults, which the original 7B config relies on.
"""

from __future__ import annotations

import json
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


def _rope_theta(cfg: dict) -> float:
    # transformers 5 writes `rope_parameters`; older files write `rope_theta` (+ optional `rope_scaling`).
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or None
    rope_type = params.get("rope_type") or (scaling or {}).get("rope_type") or (scaling or {}).get("type")
    if rope_type not in (None, "default"):
        raise CheckpointError(
            f"config.json asks for RoPE scaling type {rope_type!r}; only plain RoPE (as in every released "
            "Janus checkpoint) is supported."
        )
    return float(params.get("rope_theta", cfg.get("rope_theta", _LLAMA_DEFAULTS["rope_theta"])))


def _lm_config(cfg: dict, where: str) -> LMConfig:
    if cfg.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{where}: hidden_act {cfg['hidden_act']!r} is not supported (Janus uses 'silu').")
    get = lambda k: cfg.get(k) if cfg.get(k) is not None else _LLAMA_DEFAULTS[k]
    heads = int(get("num_attention_heads"))
    hidden = int(get("hidden_size"))
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    if heads % kv_heads:
        raise CheckpointError(f"{where}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}.")
    return LMConfig(
        vocab_size=int(get("vocab_size")),
        hidden_size=hidden,
        intermediate_size=int(get("intermediate_size")),
        num_layers=int(get("num_hidden_layers")),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=float(get("rms_norm_eps")),
        rope_theta=_rope_theta(cfg),
        max_position_embeddings=int(get("max_position_embeddings")),
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
