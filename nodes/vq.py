"""Janus VQ Decode (tokens -> IMAGE) and Janus VQ Encode (IMAGE -> tokens)."""

from __future__ import annotations

import torch

from ..janus_core import decode_tokens, encode_images
from ..janus_core.vq import check_tokens
from . import host, models
from .errors import for_input, input_error
from .sampler import _oom_message


def _batch_image(image, node: str) -> torch.Tensor:
    """IMAGE (or a list of IMAGEs) -> one [B, H, W, 3] tensor; mixed sizes are refused, naming the input."""
    if isinstance(image, (list, tuple)):
        if not image or not all(isinstance(x, torch.Tensor) for x in image):
            raise input_error(node, "image", "expected an IMAGE (a tensor [B, H, W, 3]) or a list of them.")
        shapes = {tuple(x.shape[-3:]) for x in image}
        if len(shapes) > 1:
            raise input_error(node, "image", f"the batch mixes image sizes {sorted(shapes)}; scale or crop them to "
                                             "one size first (e.g. Upscale Image) or encode them one by one.")
        image = torch.cat([x if x.dim() == 4 else x[None] for x in image])
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[-1] not in (3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise input_error(node, "image", f"expected an IMAGE [B, H, W, 3], got {shape}.")
    return image[..., :3]  # an RGBA tensor (some packs pass one): the editor keeps alpha as a separate MASK


class JanusARDecode:
    CATEGORY = "Janus"
    DESCRIPTION = "Decodes image tokens into 384x384 pixels with the VQ-16 decoder."
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The decoded images, [batch, 384, 384, 3] in 0..1.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vq": ("JANUS_VQ", {"tooltip": "The image tokenizer from Janus Model Loader (same checkpoint as the "
                                           "tokens)."}),
            "tokens": ("JANUS_TOKENS", {"tooltip": "Tokens from Janus Token Sampler, VQ Encode or Load Tokens."}),
        }}

    def decode(self, vq, tokens):
        node = "Janus VQ Decode"
        with for_input(node, "tokens"):
            t = check_tokens(tokens, vq.codebook_size, "tokens")
        models.ensure_on_device(vq)
        failure = None
        try:
            return (decode_tokens(vq, t),)
        except torch.OutOfMemoryError:
            failure = _oom_message("decoding", int(t.shape[0]), vq.dtype, vq.device)
        host.release_memory()
        raise host.JanusOutOfMemoryError(failure)


class JanusAREncode:
    CATEGORY = "Janus"
    DESCRIPTION = ("Encodes images into Janus image tokens (24x24 per image). Other sizes are resized (short side "
                   "to 384) and centre-cropped. The VQ encoder is loaded on first use.")
    RETURN_TYPES = ("JANUS_TOKENS",)
    RETURN_NAMES = ("tokens",)
    OUTPUT_TOOLTIPS = (("The images' tokens [batch, 24, 24]: feed Janus Token Sampler's init_tokens with a mask "
                        "to regenerate part of an image."),)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vq": ("JANUS_VQ", {"tooltip": "The image tokenizer from Janus Model Loader."}),
            "image": ("IMAGE", {"tooltip": "Images to encode; all of one size (non-384 sizes are resized and "
                                           "centre-cropped)."}),
        }}

    def encode(self, vq, image):
        node = "Janus VQ Encode"
        image = _batch_image(image, node)
        enc = models.vq_with_encoder(vq)
        models.ensure_on_device(enc)
        failure = None
        try:
            with for_input(node, "image"):
                return (encode_images(enc, image),)
        except torch.OutOfMemoryError:
            failure = _oom_message("encoding", int(image.shape[0]), enc.dtype, enc.device)
        host.release_memory()
        raise host.JanusOutOfMemoryError(failure)
