"""Image understanding: describe images / answer a question about them with the untied text head.

The official procedure (reference/janus-architecture.md §7; `VLChatProcessor`, `VLMImageProcessor`,
`MultiModalityCausalLM.prepare_inputs_embeds`):

- image: converted to RGB, the long side resized to 384 (bicubic; sizes truncated, at least `min_size`),
  padded to a centred square with the colour int(mean * 255), rescaled by 1/255 and normalised;
- prompt: the `deepseek` template with the processor's system prompt,
  `{system}\\n\\n{User}: <image_placeholder>\\n{question}\\n\\n{Assistant}:` (BOS first), and the placeholder
  token replaced by `<begin_of_image>` + 576 placeholder positions + `<end_of_image>`; the aligned tower
  features overwrite the embeddings at the placeholder positions;
- decoding: the LLM over one KV cache, logits from `lm_head`, greedy (temperature 0) or temperature + top-p
  sampling, until EOS or `max_new_tokens`.

Several images go in one call, one row each (left-padded when their prompts differ in length, with per-row
positions and a padding mask, like the generation sampler). Row i draws from its own generator seeded
`seed + i`, so it equals a call with that image alone and that seed.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .errors import CheckpointError, GenerationCancelled, JanusWarning, PayloadError
from .validate import SEED_MAX, integer, number, temperature_value, text
from .memory import check_fits, describing_bytes
from .model import KVCache
from .payloads import JanusLM
from .prompt import FORMATS
from .sampler import SEED_MOD, position_tables
from .sampling import draw, fill_noise, probabilities
from .tuning import ThreadTuner, prepare_forms
from .vision import ImagePreprocess, JanusUnderstanding

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the "
    "user provides, and assist the user with a variety of tasks using natural language."
)  # the official VLChatProcessor.system_prompt
IMAGE_TAG = "<image_placeholder>"
IMAGE_START = "<begin_of_image>"
IMAGE_END = "<end_of_image>"
EOS = "<｜end▁of▁sentence｜>"
MAX_TEMPERATURE = 100.0
ProgressFn = Callable[[int, int, torch.Tensor], None]  # (tokens done, max_new_tokens, tokens so far [B, step])


# ---- images ------------------------------------------------------------------------------------------------

def _to_pil(image, index: int):
    """One image (PIL, or an array/tensor [H, W] / [H, W, C] with C in 1, 3, 4; floats in 0..1 or uint8) -> RGB PIL."""
    from PIL import Image

    if isinstance(image, Image.Image):
        if image.width < 1 or image.height < 1:
            raise PayloadError(f"images[{index}] is empty ({image.width}x{image.height}); pass a real picture.")
        return image.convert("RGB")  # the official loader's convert: alpha is dropped, palettes expanded
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        image = image.float().numpy() if image.dtype != torch.uint8 else image.numpy()
    if not isinstance(image, np.ndarray):
        raise PayloadError(f"images[{index}] is a {type(image).__name__}; pass a PIL image or an array "
                           "[H, W, 3] (floats 0..1 or uint8), or the editor's IMAGE [B, H, W, 3].")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)) or 0 in image.shape:
        raise PayloadError(f"images[{index}] has shape {tuple(image.shape)}; expected [H, W], [H, W, 3] or "
                           "[H, W, 4] with H, W >= 1.")
    if image.dtype != np.uint8:
        if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
            raise PayloadError(f"images[{index}] has dtype {image.dtype}; expected floats in 0..1 or uint8.")
        image = image.astype(np.float64)
        if not np.isfinite(image).all():
            raise PayloadError(f"images[{index}] holds NaN or infinite values; fix the node or file that made it.")
        image = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)  # the editor's 0..1 -> the file's bytes
    mode = {2: "L"}.get(image.ndim) or ("RGB" if image.shape[-1] == 3 else "RGBA")
    return Image.fromarray(np.ascontiguousarray(image), mode=mode).convert("RGB")


def as_image_list(images) -> list:
    """IMAGE [B, H, W, C] tensor / array, one image, or a sequence of images -> a list of single images."""
    from PIL import Image

    if images is None:
        raise PayloadError("images: no image given; pass at least one image (connect an IMAGE to the node).")
    if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:
        out = list(images)
    elif isinstance(images, (torch.Tensor, np.ndarray, Image.Image)):
        out = [images]
    elif isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        out = list(images)
    else:
        raise PayloadError(f"images: expected an image or a list of images, got {type(images).__name__}.")
    if not out:
        raise PayloadError("images: the batch is empty; pass at least one image.")
    return out


def preprocess_image(image, prep: ImagePreprocess, index: int = 0) -> torch.Tensor:
    """One image -> float32 [3, S, S] exactly as the official `VLMImageProcessor` makes it."""
    from PIL import Image

    pil = _to_pil(image, index)
    w, h = pil.size
    longest, s = max(w, h), prep.image_size
    size = (max(int(w / longest * s), prep.min_size), max(int(h / longest * s), prep.min_size))
    pil = pil.resize(size, Image.BICUBIC)  # what torchvision's resize(BICUBIC, antialias) does on a PIL image
    w, h = pil.size
    if w != h:  # centred on a square of the long side (the original's expand2square)
        square = Image.new("RGB", (max(w, h), max(w, h)), prep.background)
        square.paste(pil, (0, (w - h) // 2) if w > h else ((h - w) // 2, 0))
        pil = square
    x = torch.from_numpy(np.asarray(pil, dtype=np.uint8).transpose(2, 0, 1).astype(np.float64) * prep.rescale_factor)
    x = x.float()
    if prep.do_normalize:
        mean = torch.tensor(prep.image_mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(prep.image_std, dtype=torch.float32).view(3, 1, 1)
        x = (x - mean) / std
    return x


def preprocess_images(images, prep: ImagePreprocess) -> torch.Tensor:
    """Any accepted image input -> float32 [B, 3, S, S]."""
    return torch.stack([preprocess_image(im, prep, i) for i, im in enumerate(as_image_list(images))])


# ---- prompt --------------------------------------------------------------------------------------------------

def check_text(value, what: str, allow_empty: bool = False) -> str:
    return text(what, value, allow_empty=allow_empty,
                empty_hint="type a question or an instruction, e.g. 'Describe this image in detail.'")


def render_understanding_prompt(question: str, prompt_format: str, system_prompt: str | None = None) -> str:
    """The official `deepseek` SFT template for one image and one question (roles of the checkpoint family)."""
    if prompt_format not in FORMATS:
        raise ValueError(f"prompt_format must be one of {sorted(FORMATS)}, got {prompt_format!r}")
    user, assistant = FORMATS[prompt_format]
    system = DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt
    head = f"{system}\n\n" if system else ""
    content = f"{IMAGE_TAG}\n{question}".strip()  # each message is stripped, then the whole prompt
    return f"{head}{user}: {content}\n\n{assistant}:".strip()


def special_id(lm: JanusLM, text: str) -> int:
    tid = lm.tokenizer.tok.token_to_id(text)
    if tid is None:
        raise CheckpointError(f"{lm.identity.name}: tokenizer.json has no {text!r} token, which image understanding "
                              "needs; download the checkpoint's current tokenizer.json.")
    return tid


def understanding_prompt_ids(lm: JanusLM, question: str, num_image_tokens: int,
                             system_prompt: str | None = None) -> list[int]:
    """Token ids of the prompt with the image placeholder expanded to BOI + N image positions + EOI."""
    image_id, start_id, end_id = (special_id(lm, t) for t in (IMAGE_TAG, IMAGE_START, IMAGE_END))
    ids = lm.tokenizer.encode(render_understanding_prompt(question, lm.prompt_format, system_prompt))
    if ids.count(image_id) != 1:
        raise PayloadError(f"question must not contain the token {IMAGE_TAG!r} (or the system prompt); one image "
                           "goes with each question.")
    at = ids.index(image_id)
    return ids[:at] + [start_id] + [image_id] * num_image_tokens + [end_id] + ids[at + 1:]


# ---- the understanding parts, loaded once per JanusLM ---------------------------------------------------------

_LOCK = threading.Lock()
_LOADED: weakref.WeakKeyDictionary[JanusLM, JanusUnderstanding] = weakref.WeakKeyDictionary()


def understanding_for(lm: JanusLM) -> JanusUnderstanding:
    """The tower, aligner and text head of `lm`'s checkpoint, read from its folder the first time they are needed
    (in the LM's dtype and device) and kept for as long as `lm` lives."""
    with _LOCK:
        und = _LOADED.get(lm)
        if und is None:
            from .loader import open_checkpoint, build_understanding

            with open_checkpoint(lm.identity.path) as ckpt:
                if ckpt.identity.fingerprint != lm.identity.fingerprint:
                    raise CheckpointError(f"{lm.identity.path}: the checkpoint files changed since the model was "
                                          "loaded; load the model again.")
                und = build_understanding(ckpt, lm.dtype, lm.device, quantize=lm.quantize)
            _LOADED[lm] = und
        return und


def release_understanding(lm: JanusLM) -> None:
    """Forget the understanding parts loaded for `lm` (they are read again on the next describe)."""
    with _LOCK:
        _LOADED.pop(lm, None)


# ---- decoding --------------------------------------------------------------------------------------------------

def check_settings(temperature, top_p, max_new_tokens) -> None:
    """The sampling settings' ranges (SettingError naming the one that is off)."""
    temperature_value(temperature)
    number("top_p", top_p, 0.0, 1.0, lo_open=True, hint=" 1 = off.")
    integer("max_new_tokens", max_new_tokens, 1, 1 << 20)


@torch.inference_mode()
def describe(
    lm: JanusLM,
    images,
    question: str | Sequence[str],
    *,
    seed: int = 0,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int = 512,
    system_prompt: str | None = None,
    progress: ProgressFn | None = None,
    should_cancel: Callable[[], bool] | None = None,
    understanding: JanusUnderstanding | None = None,
    return_ids: bool = False,
    notice: Callable[[str], None] | None = None,
    threads: int | None = None,
) -> list[str] | list[list[int]]:
    """Answer `question` about each image; one string per image, decoded whole (special tokens skipped).

    images: the editor's IMAGE [B, H, W, C] (floats 0..1), one PIL image / array, or a list of them (any size
    and mode). question: one text for every image, or one per image. temperature 0 = greedy; otherwise
    temperature + top-p (1 = off) sampling, image i seeded `seed + i`. system_prompt None = the official
    processor's default, "" = none. `progress(step, max_new_tokens, tokens)` is called per token;
    `should_cancel()` is polled per token and True raises GenerationCancelled after freeing the cache.
    The tower, aligner and text head are loaded from `lm.identity.path` on the first call (or pass
    `understanding=load_understanding(...)`). return_ids: the token ids per image (EOS excluded) instead.
    max_new_tokens is a ceiling: where the prompt and image leave less of the model's context, the answers are
    capped to what fits and `notice(message)` says so (default: a JanusWarning); only when no token fits is it
    an error. threads: CPU threads for the decode loop; None = chosen from its own step times
    (tuning.ThreadTuner)."""
    pictures = as_image_list(images)
    if isinstance(question, str):
        questions = [question] * len(pictures)
    elif isinstance(question, Sequence) and not isinstance(question, bytes):
        questions = list(question)
        if len(questions) != len(pictures):
            raise PayloadError(f"question: give one text, or one per image ({len(pictures)}); got {len(questions)}.")
    else:
        raise PayloadError(f"question must be text (or a list of texts, one per image), got {type(question).__name__}.")
    for i, q in enumerate(questions):
        check_text(q, "question" if isinstance(question, str) else f"question[{i}]")
    if system_prompt is not None:
        check_text(system_prompt, "system_prompt", allow_empty=True)
    check_settings(temperature, top_p, max_new_tokens)
    integer("seed", seed, 0, SEED_MAX)

    und = understanding if understanding is not None else understanding_for(lm)
    model, cfg, device, dtype = lm.model, lm.model.cfg, lm.device, lm.dtype
    pixels = preprocess_images(pictures, und.preprocess)
    n_img = und.model.cfg.num_positions
    prompts = [understanding_prompt_ids(lm, q, n_img, system_prompt) for q in questions]
    rows, prompt_len = len(prompts), max(len(p) for p in prompts)
    context = cfg.max_position_embeddings
    room = context - prompt_len
    if room < 1:
        raise PayloadError(f"question and image take {prompt_len} of the model's {context} context positions, "
                           "which leaves no room for an answer; use a shorter question (or system prompt).",
                           input="question")
    if max_new_tokens > room:  # a ceiling that cannot be reached: answer as long as fits, and say so
        message = (f"answers capped at {room} tokens: the question and image take {prompt_len} of the model's "
                   f"{context} context positions (max_new_tokens was {max_new_tokens}).")
        if notice is not None:
            notice(message)
        else:
            warnings.warn(message, JanusWarning, stacklevel=3)
        max_new_tokens = room
    max_len = prompt_len + max_new_tokens
    sizes = [describing_bytes(cfg, und.model.cfg, cfg.vocab_size, n, prompt_len, max_new_tokens, dtype) for n in (1, rows)]
    check_fits("describing", sizes[1], device, sizes[0], rows, "images",
               "Describe fewer images at once, lower max_new_tokens, use a smaller dtype, or free memory.")
    pad_id, eos_id, image_id = lm.tokenizer.pad_id, special_id(lm, EOS), special_id(lm, IMAGE_TAG)
    ids = torch.full((rows, prompt_len), pad_id, dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, prompt_len - len(p):] = torch.tensor(p, dtype=torch.long)
    ids = ids.to(device)
    pads = [prompt_len - len(p) for p in prompts]
    pad = torch.tensor(pads, device=device) if any(pads) else None
    cos, sin, key_valid, prefill_mask = position_tables(cfg, pad, prompt_len, max_len, device, dtype)

    features = und.model.image_features(pixels.to(device, und.dtype)).to(dtype)  # [B, N, H]
    embeds = model.embed_text(ids)
    image_mask = ids == image_id
    if pad is not None:  # a pad id equal to the image id (never in released tokenizers) must not take features
        image_mask &= torch.arange(prompt_len, device=device)[None] >= pad[:, None]
    embeds[image_mask] = features.reshape(-1, features.shape[-1])
    del features

    gens = [torch.Generator(device=device).manual_seed((seed + i) % SEED_MOD) for i in range(rows)]
    noise = torch.empty((rows, cfg.vocab_size), dtype=torch.float32, device=device) if temperature > 0 else None
    out = torch.full((rows, max_new_tokens), eos_id, dtype=torch.long, device=device)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    if device.type == "cpu":
        prepare_forms(model, rows)  # the decode products' form, measured on this machine
        prepare_forms(und.model.lm_head, rows)
    cache = KVCache(cfg, rows, max_len, device, dtype)
    steps = 0
    tuner = ThreadTuner(device, threads)
    try:
        hidden = model.forward_hidden(embeds, cos[:, :, :prompt_len], sin[:, :, :prompt_len], cache, 0,
                                      prefill_mask)[:, -1]
        del embeds
        for i in range(max_new_tokens):
            tuner.before()
            logits = und.model.text_logits(hidden).float()
            if temperature == 0:
                token = torch.argmax(logits, dim=-1)
            else:
                fill_noise(noise, gens)
                token = draw(probabilities(logits, temperature, 0, top_p), noise)
            token = torch.where(done, eos_id, token)  # finished rows keep emitting EOS (their answer is over)
            out[:, i] = token
            done |= token == eos_id
            steps = i + 1
            if progress is not None:
                progress(steps, max_new_tokens, out[:, :steps])
            if should_cancel is not None and should_cancel():
                raise GenerationCancelled(f"describing cancelled after {steps} of {max_new_tokens} tokens")
            if steps == max_new_tokens or bool(done.all()):
                break
            pos = prompt_len + i
            mask = None if key_valid is None else key_valid[:, None, None, : pos + 1]
            x = model.embed_text(token[:, None])
            hidden = model.forward_hidden(x, cos[:, :, pos : pos + 1], sin[:, :, pos : pos + 1], cache, pos, mask)[:, -1]
            tuner.after()
    finally:
        tuner.close()
        cache.release()  # a cancel or an error leaves no cache alive
        del cache
    answers = [row[: row.index(eos_id)] if eos_id in row else row for row in out[:, :steps].cpu().tolist()]
    if return_ids:
        return answers
    return [lm.tokenizer.tok.decode(row, skip_special_tokens=True) for row in answers]


def answer_ids(lm: JanusLM, images, question, **options) -> list[list[int]]:
    """The generated token ids per image (EOS excluded): `describe(..., return_ids=True)`, same arguments."""
    return describe(lm, images, question, return_ids=True, **options)

