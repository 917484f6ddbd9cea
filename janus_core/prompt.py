"""Prompt / CFG preparation: the chat template, the `<begin_of_image>` suffix and the unconditional row.

Formats (reference/janus-architecture.md §5.1), both with an empty system prompt:
- "pro":   `<|User|>: {prompt}\\n\\n<|Assistant|>:<begin_of_image>` (Janus-Pro-1B / -7B)
- "janus": `User: {prompt}\\n\\nAssistant:<begin_of_image>` (Janus-1.3B)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tokenizers import Tokenizer

from .errors import CheckpointError, PayloadError, SettingError
from .payloads import NUM_IMAGE_TOKENS, JanusCond, JanusLM
from .validate import text as check_text

BOS = "<｜begin▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"  # the reference's unconditional filler; NOT tokenizer.pad_token_id
BEGIN_OF_IMAGE = "<begin_of_image>"
FORMATS = {"pro": ("<|User|>", "<|Assistant|>"), "janus": ("User", "Assistant")}


class PromptTokenizer:
    """tokenizer.json through the `tokenizers` library, plus the special ids Janus needs (looked up by exact string)."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path} not found: the checkpoint folder needs the model's tokenizer.json.")
        data = path.read_bytes()
        try:
            self.tok = Tokenizer.from_str(data.decode("utf-8"))
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise CheckpointError(f"{path}: cannot parse tokenizer.json ({exc}).") from exc
        self.id = hashlib.sha256(data).hexdigest()[:16]
        ids = {}
        for name, text in (("bos", BOS), ("pad", PAD), ("boi", BEGIN_OF_IMAGE)):
            ids[name] = self.tok.token_to_id(text)
            if ids[name] is None:
                raise CheckpointError(f"{path}: token {text!r} missing; this is not a Janus tokenizer.")
        self.bos_id, self.pad_id, self.boi_id = ids["bos"], ids["pad"], ids["boi"]

    @property
    def max_id(self) -> int:
        """The largest token id this tokenizer can produce."""
        return max(self.tok.get_vocab(with_added_tokens=True).values())

    def has_token(self, text: str) -> bool:
        return self.tok.token_to_id(text) is not None

    def encode(self, text: str) -> list[int]:
        ids = self.tok.encode(text, add_special_tokens=True).ids
        return ids if ids and ids[0] == self.bos_id else [self.bos_id, *ids]


def detect_prompt_format(tokenizer: PromptTokenizer, config: dict, folder_name: str) -> str:
    """Janus-1.3B when the checkpoint names itself so or the tokenizer lacks `<|User|>`; otherwise Janus-Pro."""
    names = " ".join(str(x) for x in (folder_name, config.get("_name_or_path", ""))).lower()
    if "janus-1.3b" in names or "janus_1.3b" in names or not tokenizer.has_token("<|User|>"):
        return "janus"
    return "pro"


def render_prompt(text: str, prompt_format: str) -> str:
    """The reference's `deepseek` SFT template with an empty system prompt, then `<begin_of_image>`."""
    if prompt_format not in FORMATS:
        raise SettingError(f"prompt_format must be one of {sorted(FORMATS)}, got {prompt_format!r}.",
                           input="prompt_format")
    user, assistant = FORMATS[prompt_format]
    text = text.strip()
    head = f"{user}: {text}\n\n" if text else f"{user}:"
    return f"{head}{assistant}:".strip() + BEGIN_OF_IMAGE


def prepare_cond(lm: JanusLM, prompt: str, negative_prompt: str = "", prompt_format: str | None = None) -> JanusCond:
    """Token ids of the conditional row and of the unconditional row.

    Empty `negative_prompt`: the reference's unconditional row (every token but BOS and the final
    `<begin_of_image>` replaced by the pad id). Otherwise the negative prompt in the same template.
    """
    check_text("prompt", prompt)
    check_text("negative_prompt", negative_prompt)
    fmt = prompt_format or lm.prompt_format
    tok = lm.tokenizer
    cond = tok.encode(render_prompt(prompt, fmt))
    if negative_prompt and negative_prompt.strip():
        uncond = tok.encode(render_prompt(negative_prompt, fmt))
    else:
        uncond = [cond[0]] + [tok.pad_id] * (len(cond) - 2) + [cond[-1]]
    positions = lm.model.cfg.max_position_embeddings
    for name, ids in (("prompt", cond), ("negative_prompt", uncond)):
        if len(ids) + NUM_IMAGE_TOKENS > positions:
            raise PayloadError(f"{name} too long: {len(ids)} tokens + {NUM_IMAGE_TOKENS} image tokens exceed the "
                               f"model's {positions} positions; shorten it to at most {positions - NUM_IMAGE_TOKENS} "
                               "tokens (a few hundred words).", input=name)
    return JanusCond(
        cond_ids=tuple(cond),
        uncond_ids=tuple(uncond),
        prompt=prompt,
        negative_prompt=negative_prompt or "",
        prompt_format=fmt,
        tokenizer_id=tok.id,
        model_name=lm.identity.name,
    )
