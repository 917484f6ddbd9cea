"""The demo model's tokenizer and the token sequences it is trained on.

The tokenizer is a byte-level BPE (any text encodes; grammar words are single tokens) holding the special tokens
every Janus tokenizer has, trained by the `tokenizers` library on the grammar's own sentences, the prompt
templates and the official understanding system prompt.
"""

from __future__ import annotations

import random
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from scenes import (COLOURS, POSITION_PHRASES, QUESTIONS, SHAPES, Scene, article, caption, question_answers,
                    random_scene, shape_phrase)

SPECIAL_TOKENS = [
    "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", "<begin_of_image>", "<end_of_image>",
    "<image_placeholder>", "<|User|>", "<|Assistant|>",
]  # fmt: skip
BOS, EOS, PAD = SPECIAL_TOKENS[0], SPECIAL_TOKENS[1], SPECIAL_TOKENS[2]
VOCAB_SIZE = 512


def corpus(n_scenes: int = 3000, seed: int = 0):
    from janus_core.understand import DEFAULT_SYSTEM_PROMPT

    rng = random.Random(seed)
    yield DEFAULT_SYSTEM_PROMPT
    yield "User: Assistant: <|User|>: <|Assistant|>:\n\n"
    yield " ".join(COLOURS + SHAPES + ("small", "large", "background", "and", "on", "a", "an", "the"))
    for phrases in POSITION_PHRASES.values():
        yield " ".join(phrases)
    for qs in QUESTIONS.values():
        yield from qs
    for _ in range(n_scenes):
        scene = random_scene(rng)
        yield caption(scene)
        for q, a in question_answers(scene):
            yield f"{q}\n{a}"


def build_tokenizer(path: Path) -> Path:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                       special_tokens=[(BOS, tok.token_to_id(BOS))])
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


# ---- captions for training -----------------------------------------------------------------------------------

def training_caption(scene: Scene, rng: random.Random) -> str:
    """The scene's caption, or (one time in five) a part of it, so the model also learns what a partial prompt
    means (what a negative prompt such as "red" or "a circle" pushes away from)."""
    r = rng.random()
    if r < 0.8 or not scene.shapes:
        return caption(scene)
    s = rng.choice(scene.shapes)
    if r < 0.86:
        return " and ".join(shape_phrase(x, rng.randrange(2)) for x in scene.shapes)  # no background named
    if r < 0.9:
        return f"{article(scene.background)} {scene.background} background"
    if r < 0.95:
        return s.colour
    return f"a {s.kind}"
