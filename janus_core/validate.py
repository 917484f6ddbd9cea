"""Checks at the boundary of every entry point: settings and text are refused before any work starts.

Each check returns the value in its canonical type or raises a `SettingError` / `PayloadError` whose
message names the input, says what was wrong (with the allowed range) and what to do.
"""

from __future__ import annotations

import math
import numbers

from .errors import PayloadError, SettingError

SEED_MAX = 2**64 - 1
CFG_MAX = 100.0
TEMPERATURE_MIN = 0.01  # below this logits / t overflow float32: the softmax would be NaN or a hard argmax
TEMPERATURE_MAX = 100.0
BATCH_MAX = 1024  # well past any real use; the memory estimate refuses much smaller batches on most machines


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def integer(name: str, value, lo: int, hi: int, hint: str = "") -> int:
    """An integer (not a bool, not a float) in lo..hi."""
    if not _is_int(value):
        raise SettingError(f"{name} must be a whole number in {lo}..{hi}, got {value!r} ({type(value).__name__}).{hint}",
                           input=name)
    value = int(value)
    if not lo <= value <= hi:
        raise SettingError(f"{name} must be in {lo}..{hi}, got {value}.{hint}", input=name)
    return value


def number(name: str, value, lo: float, hi: float, *, lo_open: bool = False, hint: str = "") -> float:
    """A finite real number in [lo, hi] (or (lo, hi] with lo_open); NaN and inf are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SettingError(f"{name} must be a number, got {value!r} ({type(value).__name__}).{hint}", input=name)
    value = float(value)
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
    if not math.isfinite(value):
        raise SettingError(f"{name} must be a finite number in {interval}, got {value}.{hint}", input=name)
    if value < lo or value > hi or (lo_open and value == lo):
        raise SettingError(f"{name} must be in {interval}, got {value:g}.{hint}", input=name)
    return value


def text(name: str, value, *, allow_empty: bool = True, empty_hint: str = "write some text") -> str:
    """A str that is valid Unicode (no lone surrogates, which cannot be encoded for the tokenizer)."""
    if not isinstance(value, str):
        raise PayloadError(f"{name} must be text, got {type(value).__name__}.", input=name)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadError(f"{name} is not valid Unicode (character {exc.start}: an unpaired surrogate "
                           f"{value[exc.start:exc.end]!r}, e.g. from a badly decoded file or clipboard). Retype or "
                           "re-save the text as UTF-8.", input=name) from None
    if not allow_empty and not value.strip():
        raise PayloadError(f"{name} is empty; {empty_hint}.", input=name)
    return value


def sampler_settings(*, seed, batch_size, cfg, temperature, top_k, top_p) -> dict:
    """The image sampler's settings, checked and in canonical types."""
    return {
        "seed": integer("seed", seed, 0, SEED_MAX),
        "batch_size": integer("batch_size", batch_size, 1, BATCH_MAX),
        "cfg": number("cfg", cfg, 0.0, CFG_MAX, hint=" 1 = no guidance; the reference uses 5."),
        "temperature": temperature_value(temperature),
        "top_k": integer("top_k", top_k, 0, 2**31 - 1, hint=" 0 = off."),
        "top_p": number("top_p", top_p, 0.0, 1.0, lo_open=True,
                        hint=" 1 = off; for always the most likely token use temperature 0."),
    }


def temperature_value(value) -> float:
    t = number("temperature", value, 0.0, TEMPERATURE_MAX, hint=" 0 = greedy (always the most likely token).")
    if 0 < t < TEMPERATURE_MIN:
        raise SettingError(f"temperature must be 0 (greedy) or in [{TEMPERATURE_MIN:g}, {TEMPERATURE_MAX:g}], got "
                           f"{t:g}: smaller values overflow the softmax. Use 0 for greedy.", input="temperature")
    return t
