"""The official text-to-image loop (reference/janus-architecture.md §5), written plainly on transformers' Janus
modules: interleaved cond/uncond rows, the Llama model with its default growing cache, generation head on the
last hidden state, CFG, softmax at temperature and `torch.multinomial(probs, 1)` (or argmax when greedy)."""

from __future__ import annotations

import inspect

import torch


def _cache_kwarg(language_model) -> str:
    params = inspect.signature(language_model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@torch.inference_mode()
def reference_tokens(hf_model, prompt_ids, pad_id: int, cfg_weight: float = 5.0, temperature: float = 1.0,
                     parallel_size: int = 1, greedy: bool = False, steps: int = 576) -> torch.Tensor:
    """Token ids [parallel_size, steps]. Seed the global RNG (torch.manual_seed) before calling, as the script does."""
    lm = hf_model.model.language_model
    kw = _cache_kwarg(lm)
    ids = torch.tensor(prompt_ids, dtype=torch.long)
    tokens = ids.repeat(parallel_size * 2, 1)
    tokens[1::2, 1:-1] = pad_id  # odd rows: unconditional
    embeds = hf_model.get_input_embeddings()(tokens)
    out, cache = None, None
    generated = torch.zeros((parallel_size, steps), dtype=torch.long)
    for i in range(steps):
        out = lm(inputs_embeds=embeds, use_cache=True, **{kw: cache})
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        logits = hf_model.model.generation_head(out.last_hidden_state[:, -1, :])
        cond, uncond = logits[0::2], logits[1::2]
        logits = uncond + cfg_weight * (cond - uncond)
        if greedy:
            next_token = torch.argmax(logits, dim=-1, keepdim=True)
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            next_token = torch.multinomial(probs, num_samples=1)
        generated[:, i] = next_token.squeeze(-1)
        next_token = torch.cat([next_token.unsqueeze(1), next_token.unsqueeze(1)], dim=1).view(-1)
        embeds = hf_model.prepare_embeddings_for_image_generation(next_token).unsqueeze(1)
    return generated


@torch.inference_mode()
def reference_tokens_separate_rows(hf_model, cond_ids, uncond_ids, cfg_weight: float, steps: int = 576):
    """Greedy CFG with the cond and uncond rows run as separate unpadded sequences (for prompts of different
    lengths, where the batched script cannot be used)."""
    lm = hf_model.model.language_model
    kw = _cache_kwarg(lm)
    rows = [hf_model.get_input_embeddings()(torch.tensor([ids])) for ids in (cond_ids, uncond_ids)]
    caches = [None, None]
    generated = torch.zeros((1, steps), dtype=torch.long)
    for i in range(steps):
        logits = []
        for r in range(2):
            out = lm(inputs_embeds=rows[r], use_cache=True, **{kw: caches[r]})
            caches[r] = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            logits.append(hf_model.model.generation_head(out.last_hidden_state[:, -1, :]))
        mixed = logits[1] + cfg_weight * (logits[0] - logits[1])
        token = torch.argmax(mixed, dim=-1)
        generated[:, i] = token
        emb = hf_model.prepare_embeddings_for_image_generation(token).unsqueeze(1)
        rows = [emb, emb]
    return generated
