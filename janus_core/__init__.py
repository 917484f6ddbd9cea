"""janus_core: Janus / Janus-Pro text-to-image as separate stages, weight-compatible with the official checkpoints.

    from janus_core import load, prepare_cond, sample_tokens, decode_tokens
    lm, vq = load("models/Janus-Pro/Janus-Pro-1B")
    cond = prepare_cond(lm, "a watercolor fox")
    tokens = sample_tokens(lm, cond, seed=42, batch_size=2)
    images = decode_tokens(vq, tokens)   # float32 [2, 384, 384, 3] in 0..1
    answers = describe(lm, images, "Describe this image in detail.")   # one str per image
"""

from .errors import CheckpointError, DownloadError, GenerationCancelled, JanusError, JanusWarning, PayloadError
from .loader import load, load_generator, load_understanding, load_vq, resolve_device, resolve_dtype
from .payloads import GRID, IMAGE_SIZE, NUM_IMAGE_TOKENS, JanusCond, JanusLM, JanusTokens, JanusVQ, ModelIdentity
from .preview import fit_token_palette, id_palette, token_preview
from .prompt import prepare_cond, render_prompt
from .sampler import check_cond, sample_tokens
from .understand import DEFAULT_SYSTEM_PROMPT, describe
from .vq import check_tokens, decode_tokens, encode_images

__version__ = "0.1.0"
__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "GRID",
    "IMAGE_SIZE",
    "NUM_IMAGE_TOKENS",
    "CheckpointError",
    "DownloadError",
    "GenerationCancelled",
    "JanusCond",
    "JanusError",
    "JanusLM",
    "JanusTokens",
    "JanusVQ",
    "JanusWarning",
    "ModelIdentity",
    "PayloadError",
    "check_cond",
    "check_tokens",
    "decode_tokens",
    "describe",
    "encode_images",
    "fit_token_palette",
    "id_palette",
    "load",
    "load_generator",
    "load_understanding",
    "load_vq",
    "prepare_cond",
    "render_prompt",
    "resolve_device",
    "resolve_dtype",
    "sample_tokens",
    "token_preview",
]  # fmt: skip
