"""The values passed between stages (the editor's JANUS_* socket payloads). Plain dataclasses.

- `JanusLM` (JANUS_LM): generation model + tokenizer + prompt format + identity.
- `JanusVQ` (JANUS_VQ): VQ-16 decoder (+ encoder when loaded) + identity.
- `JanusCond` (JANUS_COND): token ids of the conditional and unconditional rows, the texts, and the
  identity of the tokenizer that made them.
- `JanusTokens` (JANUS_TOKENS): int64 codebook indices [B, 24, 24] on the CPU, per-image seeds, the
  sampling settings and the producing model's identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .model import JanusGenerator
from .vq_model import VQModel

GRID = 24  # 384 px / 16: the only size the released models were trained for
NUM_IMAGE_TOKENS = GRID * GRID
IMAGE_SIZE = 384


@dataclass(frozen=True)
class ModelIdentity:
    """Checkpoint folder, its content fingerprint and a short display name."""

    path: str
    fingerprint: str
    name: str

    def as_dict(self) -> dict:
        return {"path": self.path, "fingerprint": self.fingerprint, "name": self.name}


@dataclass(eq=False)
class JanusLM:
    model: JanusGenerator
    tokenizer: PromptTokenizer  # noqa: F821 (prompt.py)
    prompt_format: str
    identity: ModelIdentity
    device: torch.device
    dtype: torch.dtype  # activations, embeddings, norms, KV cache (and the linear weights unless quantized)
    quantize: str = "none"  # weight-only quantization of the linear layers: "none", "int8" or "int4"
    static_decoders: dict = field(default_factory=dict, repr=False)  # compiled steps (sampler, compile=True)


@dataclass(eq=False)
class JanusVQ:
    model: VQModel
    identity: ModelIdentity
    device: torch.device
    dtype: torch.dtype

    @property
    def codebook_size(self) -> int:
        return self.model.codebook_size


@dataclass(frozen=True)
class JanusCond:
    cond_ids: tuple[int, ...]
    uncond_ids: tuple[int, ...]
    prompt: str
    negative_prompt: str
    prompt_format: str
    tokenizer_id: str  # sha256 prefix of tokenizer.json: a cond is valid for any model with that tokenizer
    model_name: str


@dataclass(eq=False)
class JanusTokens:
    tokens: torch.Tensor  # int64 [B, 24, 24], CPU
    seeds: list = field(default_factory=list)  # per image; None where unknown (e.g. encoded images)
    settings: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)  # ModelIdentity.as_dict() of the producer
    prompt: str = ""

    @property
    def batch_size(self) -> int:
        return int(self.tokens.shape[0])
