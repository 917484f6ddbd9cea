"""janus_core: Janus / Janus-Pro text-to-image as separate stages, weight-compatible with the official checkpoints.

    from janus_core import load, prepare_cond, sample_tokens, decode_tokens
    lm, vq = load("models/Janus-Pro/Janus-Pro-1B")
    cond = prepare_cond(lm, "a watercolor fox")
    tokens = sample_tokens(lm, cond, seed=42, batch_size=2)
    images = decode_tokens(vq, tokens)   # float32 [2, 384, 384, 3] in 0..1
"""

from .errors import CheckpointError, DownloadError, GenerationCancelled, JanusError, PayloadError
from .loader import load, load_generator, load_vq, resolve_device, resolve_dtype
from .payloads import GRID, IMAGE_SIZE, NUM_IMAGE_TOKENS, JanusCond, JanusLM, JanusTokens, JanusVQ, ModelIdentity
from .preview import fit_token_palette, id_palette, token_preview
from .prompt import prepare_cond, render_prompt
from .sampler import sample_tokens
from .vq import decode_tokens, encode_images

__version__ = "0.1.0"
__all__ = [
    "CheckpointError", "DownloadError", "GenerationCancelled", "JanusError", "PayloadError",
    "load", "load_generator", "load_vq", "resolve_device", "resolve_dtype",
    "GRID", "IMAGE_SIZE", "NUM_IMAGE_TOKENS", "JanusCond", "JanusLM", "JanusTokens", "JanusVQ", "ModelIdentity",
    "fit_token_palette", "id_palette", "token_preview", "prepare_cond", "render_prompt", "sample_tokens",
    "decode_tokens", "encode_images",
]  # fmt: skip
