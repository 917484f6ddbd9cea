"""Shared fixtures: tiny random checkpoints in both layouts and all weight formats, built once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub (set before anything imports huggingface_hub)
os.environ["JANUS_TUNING_CACHE"] = ""  # measurements last for the test process: nothing read from or left in ~/.cache

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.tiny_checkpoint import build_hf_model, write_checkpoint  # noqa: E402

# Tiny models are all small kernels, which run several times faster on one thread than on two on small VMs.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def hf_model():
    """transformers' JanusForConditionalGeneration with tiny random weights (the oracle)."""
    return build_hf_model()


@pytest.fixture(scope="session")
def make_checkpoint(hf_model, tmp_path_factory):
    """make_checkpoint(layout="transformers"|"original", fmt="safetensors"|"bin", shards=1) -> folder (cached)."""
    cache: dict = {}
    root = tmp_path_factory.mktemp("ckpt")

    def make(layout: str = "transformers", fmt: str = "safetensors", shards: int = 1, dtype=torch.float32,
             pro_roles: bool = True) -> Path:
        key = (layout, fmt, shards, dtype, pro_roles)
        if key not in cache:
            name = f"{layout}-{fmt}-{shards}-{str(dtype).split('.')[-1]}{'' if pro_roles else '-noroles'}"
            cache[key] = write_checkpoint(hf_model, root / name, layout, fmt, shards, dtype, pro_roles)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_ckpt(make_checkpoint) -> Path:
    """The canonical tiny checkpoint: transformers layout, one safetensors file."""
    return make_checkpoint()


@pytest.fixture(scope="session")
def loaded(tiny_ckpt):
    """(JanusLM, JanusVQ) of the canonical tiny checkpoint on the CPU in float32, VQ encoder included."""
    from janus_core import load

    return load(tiny_ckpt, dtype="float32", device="cpu", with_encoder=True)


@pytest.fixture(scope="session")
def understanding(loaded):
    """The vision tower / aligner / text head of the canonical tiny checkpoint, loaded once for `loaded`'s JanusLM."""
    from janus_core.understand import understanding_for

    return understanding_for(loaded[0])


@pytest.fixture(scope="session")
def lm(loaded):
    """The JanusLM of `loaded`."""
    return loaded[0]


@pytest.fixture(scope="session")
def vq(loaded):
    """The JanusVQ of `loaded` (encoder included)."""
    return loaded[1]
