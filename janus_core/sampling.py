"""Sampling as pure functions on logits (gpt-fast style). All work in float32."""

from __future__ import annotations

import torch


def cfg_mix(logits: torch.Tensor, batch: int, weight: float) -> torch.Tensor:
    """Rows [0, B) are conditional, [B, 2B) unconditional: uncond + w * (cond - uncond), as the reference."""
    cond, uncond = logits[:batch], logits[batch:]
    return uncond + weight * (cond - uncond)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits per row (k <= 0 or k >= vocab: unchanged)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches p (p >= 1: unchanged); always keeps the top token."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = (cum - sorted_logits.softmax(dim=-1)) >= p  # mass before this token already reaches p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def probabilities(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """softmax(filter(logits / temperature)); filters only run when enabled."""
    logits = logits / temperature
    logits = top_k_filter(logits, top_k)
    logits = top_p_filter(logits, top_p)
    return torch.softmax(logits, dim=-1)


def draw(probs: torch.Tensor, exp_noise: torch.Tensor) -> torch.Tensor:
    """One sample per row given Exp(1) noise: argmax(p / q). This is exactly what `torch.multinomial(p, 1)`
    computes internally, so with noise from a generator seeded s it reproduces `multinomial` under that seed."""
    return torch.argmax(probs / exp_noise, dim=-1)


def fill_noise(noise: torch.Tensor, generators: list[torch.Generator]) -> None:
    """Row i of `noise` <- Exp(1) draws from generator i (per-image streams make batches seed-separable)."""
    for row, gen in zip(noise, generators):
        row.exponential_(1.0, generator=gen)
