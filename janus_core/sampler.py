"""The autoregressive image-token sampler with classifier-free guidance.

One code path for every device: the prompt is prefilled once, the KV cache is allocated once for
prompt + 576 positions and written in place, cond and uncond rows go through one forward, the head
runs on the last position only, and attention reads only the filled prefix of the cache. Nothing
syncs with the host per step except what the progress callback itself asks for (`progress_every`).

Seeds: image i of a batch draws from its own generator seeded `seed + i`, so it equals a batch of
one with that seed; with temperature 1 and no top-k/top-p a batch of one reproduces the reference
loop (`torch.manual_seed(s)` + `torch.multinomial(probs, 1)` per step) on the CPU in float32.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from .errors import GenerationCancelled, PayloadError
from .memory import check_fits, sampling_bytes
from .model import KVCache, rope_tables
from .payloads import GRID, NUM_IMAGE_TOKENS, JanusCond, JanusLM, JanusTokens
from .sampling import cfg_mix, draw, fill_noise, probabilities
from .tuning import ThreadTuner, prepare_forms
from .validate import integer, sampler_settings

ProgressFn = Callable[[int, int, torch.Tensor], None]  # (step done, total, tokens so far [B, step])
SEED_MOD = 2**64


def check_cond(lm: JanusLM, cond: JanusCond) -> None:
    if not isinstance(lm, JanusLM):
        raise PayloadError(f"lm must be a JanusLM (from load / Janus Model Loader), got {type(lm).__name__}.",
                           input="lm")
    if not isinstance(cond, JanusCond):
        raise PayloadError(f"cond must be a JanusCond (from Janus Prompt), got {type(cond).__name__}.", input="cond")
    if cond.tokenizer_id != lm.tokenizer.id:
        raise PayloadError(
            f"cond was made by the tokenizer of {cond.model_name!r}, which differs from the tokenizer of "
            f"{lm.identity.name!r}. Connect the Janus Prompt node to the same model loader as the sampler.",
            input="cond",
        )


def _rows(cond: JanusCond, batch: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Left-padded ids [2B, T] (cond rows first) and the count of pad positions per row (None if none)."""
    t = max(len(cond.cond_ids), len(cond.uncond_ids))
    pads = [t - len(cond.cond_ids)] * batch + [t - len(cond.uncond_ids)] * batch
    ids = torch.zeros((2 * batch, t), dtype=torch.long)
    for r, seq in enumerate([cond.cond_ids] * batch + [cond.uncond_ids] * batch):
        ids[r, pads[r]:] = torch.tensor(seq, dtype=torch.long)
    pad = torch.tensor(pads, device=device) if any(pads) else None
    return ids.to(device), pad


def _grid_payload(name: str, value, batch: int, *, is_mask: bool) -> torch.Tensor:
    """init_tokens / keep_mask as [B, 576]: a tensor of [N, 24, 24] or [N, 576] with N = 1 or batch."""
    if not isinstance(value, torch.Tensor):
        raise PayloadError(f"{name} must be a tensor [B, 24, 24], got {type(value).__name__}.", input=name)
    t = value
    if t.dim() == 2 and t.shape == (GRID, GRID):
        t = t[None]
    if not ((t.dim() == 3 and tuple(t.shape[1:]) == (GRID, GRID)) or (t.dim() == 2 and t.shape[1] == NUM_IMAGE_TOKENS)):
        raise PayloadError(f"{name} has shape {tuple(value.shape)}; expected [B, {GRID}, {GRID}] or "
                           f"[B, {NUM_IMAGE_TOKENS}] with B = 1 or batch_size {batch}.", input=name)
    if t.shape[0] not in (1, batch):
        raise PayloadError(f"{name} has batch {t.shape[0]}; expected 1 or batch_size {batch}.", input=name)
    t = t.reshape(t.shape[0], NUM_IMAGE_TOKENS)
    if is_mask:
        if t.dtype != torch.bool:
            if t.dtype.is_complex or not bool(((t == 0) | (t == 1)).all()):
                raise PayloadError(f"{name} must be boolean (True = keep), or 0/1 values; got {t.dtype} with other "
                                   "values.", input=name)
            t = t.bool()
    elif t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise PayloadError(f"{name} must hold integer codebook indices, got {t.dtype}.", input=name)
    return t.expand(batch, -1).cpu()


def check_init(init_tokens, keep_mask, batch: int, codebook: int):
    if init_tokens is None and keep_mask is None:
        return None, None
    if init_tokens is None or keep_mask is None:
        missing = "init_tokens" if init_tokens is None else "keep_mask"
        raise PayloadError("init_tokens and keep_mask go together: give both or neither.", input=missing)
    init = _grid_payload("init_tokens", init_tokens, batch, is_mask=False).long()
    keep = _grid_payload("keep_mask", keep_mask, batch, is_mask=True)
    if int(init.min()) < 0 or int(init.max()) >= codebook:
        raise PayloadError(f"init_tokens hold indices outside the codebook 0..{codebook - 1} (min {int(init.min())}, "
                           f"max {int(init.max())}): they come from another model.", input="init_tokens")
    return init, keep


def check_sampling_memory(lm: JanusLM, batch: int, prompt_len: int) -> None:
    """Refuse a batch whose KV cache + activations cannot fit, before allocating anything."""
    model = lm.model
    per = sampling_bytes(model.cfg, model.image_vocab, 1, prompt_len, lm.dtype)
    need = sampling_bytes(model.cfg, model.image_vocab, batch, prompt_len, lm.dtype)
    check_fits("sampling", need, lm.device, per, batch, "batch_size",
               "Lower batch_size, use a smaller dtype (bfloat16 / float16), or free memory.")


def position_tables(cfg_lm, pad: torch.Tensor | None, prompt_len: int, max_len: int, device, dtype):
    """Rotary tables, key-validity and prefill mask for rows left-padded by `pad` positions each (None = no padding).

    Returns cos/sin [R|1, 1, max_len, hd], key_valid [R, max_len] (None without padding) and the prefill mask."""
    positions = torch.arange(max_len, device=device)
    if pad is None:
        cos, sin = (t[None, None] for t in rope_tables(cfg_lm, positions, dtype))  # [1, 1, L, hd]
        return cos, sin, None, torch.ones(prompt_len, prompt_len, dtype=torch.bool, device=device).tril()
    # left padding: each row counts positions from its first real token, pads are never attended
    row_pos = (positions[None] - pad[:, None]).clamp(min=0)
    cos, sin = (t[:, None] for t in rope_tables(cfg_lm, row_pos, dtype))  # [R, 1, L, hd]
    key_valid = positions[None] >= pad[:, None]  # [R, L]
    causal = torch.ones(prompt_len, prompt_len, dtype=torch.bool, device=device).tril()
    eye = torch.eye(prompt_len, dtype=torch.bool, device=device)  # pad queries see themselves: no NaN rows
    return cos, sin, key_valid, (causal & (key_valid[:, None, :prompt_len] | eye))[:, None]


@torch.inference_mode()
def sample_tokens(
    lm: JanusLM,
    cond: JanusCond,
    *,
    seed: int = 0,
    batch_size: int = 1,
    cfg: float = 5.0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    init_tokens: torch.Tensor | None = None,
    keep_mask: torch.Tensor | None = None,
    progress: ProgressFn | None = None,
    progress_every: int = 1,
    should_cancel: Callable[[], bool] | None = None,
    compile: bool = False,
    threads: int | None = None,
) -> JanusTokens:
    """Sample `batch_size` images' tokens. temperature 0 = greedy (argmax, for tests and oracles).

    `init_tokens` [B|1, 24, 24] + `keep_mask` [B|1, 24, 24] (True = keep): kept positions are forced to the
    given token, the rest are sampled (the random streams advance identically either way).
    `should_cancel` is polled between steps; True raises GenerationCancelled after freeing the cache.
    `threads`: CPU threads for the loop; None = chosen from the loop's own step times (tuning.ThreadTuner).
    """
    settings = sampler_settings(seed=seed, batch_size=batch_size, cfg=cfg, temperature=temperature, top_k=top_k,
                                top_p=top_p)
    seed, batch_size, cfg, temperature, top_k, top_p = (settings[k] for k in (
        "seed", "batch_size", "cfg", "temperature", "top_k", "top_p"))
    progress_every = integer("progress_every", progress_every, 1, NUM_IMAGE_TOKENS)
    if threads is not None:
        threads = integer("threads", threads, 1, 4 * (os.cpu_count() or 1))
    check_cond(lm, cond)
    model, cfg_lm, device = lm.model, lm.model.cfg, lm.device
    init, keep = check_init(init_tokens, keep_mask, batch_size, model.image_vocab)
    prompt_len = max(len(cond.cond_ids), len(cond.uncond_ids))
    max_len = prompt_len + NUM_IMAGE_TOKENS
    if max_len > cfg_lm.max_position_embeddings:
        longest = "prompt" if len(cond.cond_ids) >= len(cond.uncond_ids) else "negative_prompt"
        raise PayloadError(f"{longest} too long: {prompt_len} tokens + 576 image tokens exceed the model's "
                           f"{cfg_lm.max_position_embeddings} positions. Shorten it.", input=longest)
    check_sampling_memory(lm, batch_size, prompt_len)
    if init is not None:
        init, keep = init.to(device), keep.to(device)

    ids, pad = _rows(cond, batch_size, device)
    rows = ids.shape[0]

    cos, sin, key_valid, prefill_mask = position_tables(cfg_lm, pad, prompt_len, max_len, device, lm.dtype)

    if device.type == "cpu":
        prepare_forms(model, rows)  # the decode products' form, measured here (before any compile)
    decoder = None
    if compile:
        decoder = static_decoder(lm, rows, max_len)
        cos, sin, key_valid = decoder.prepare(cos, sin, key_valid, prompt_len)
        cache = decoder.cache
    else:
        cache = KVCache(cfg_lm, rows, max_len, device, lm.dtype)
    seeds = [(seed + i) % SEED_MOD for i in range(batch_size)]
    gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    noise = torch.empty((batch_size, model.image_vocab), dtype=torch.float32, device=device)
    out = torch.empty((batch_size, NUM_IMAGE_TOKENS), dtype=torch.long, device=device)
    ok = False
    tuner = ThreadTuner(device, threads)
    try:
        hidden = model.forward_hidden(model.embed_text(ids), cos[:, :, :prompt_len], sin[:, :, :prompt_len],
                                      cache, 0, prefill_mask)[:, -1]
        for i in range(NUM_IMAGE_TOKENS):
            tuner.before()  # each step (head, sampling, forward) is timed under the thread count it ran with
            logits = cfg_mix(model.image_logits(hidden).float(), batch_size, cfg)
            if temperature == 0:
                token = torch.argmax(logits, dim=-1)
            else:
                fill_noise(noise, gens)
                token = draw(probabilities(logits, temperature, top_k, top_p), noise)
            if keep is not None:
                token = torch.where(keep[:, i], init[:, i], token)
            out[:, i] = token
            if progress is not None and ((i + 1) % progress_every == 0 or i + 1 == NUM_IMAGE_TOKENS):
                progress(i + 1, NUM_IMAGE_TOKENS, out[:, : i + 1])
            if should_cancel is not None and should_cancel():
                raise GenerationCancelled(f"sampling cancelled after {i + 1} of {NUM_IMAGE_TOKENS} tokens")
            if i + 1 == NUM_IMAGE_TOKENS:
                break  # the last token's embedding is never used
            x = model.image_token_embeds(token.repeat(2))[:, None]  # same token for the cond and uncond row
            pos = prompt_len + i
            if decoder is not None:
                hidden = decoder.step(x, pos)
            else:
                mask = None if key_valid is None else key_valid[:, None, None, : pos + 1]
                hidden = model.forward_hidden(x, cos[:, :, pos : pos + 1], sin[:, :, pos : pos + 1], cache, pos, mask)[:, -1]
            tuner.after()
        ok = True
    finally:
        tuner.close()
        if decoder is None:
            cache.release()  # a cancel or an error leaves no cache alive (the traceback still holds this frame)
        elif not ok:
            drop_static_decoders(lm)
        del cache
    return JanusTokens(
        tokens=out.view(batch_size, GRID, GRID).cpu(),
        seeds=seeds,
        settings={"cfg": cfg, "temperature": temperature, "top_k": top_k, "top_p": top_p,
                  "batch_size": batch_size, "seed": seed, "partial": keep is not None,
                  "quantize": lm.quantize},
        model=lm.identity.as_dict(),
        prompt=cond.prompt,
    )


STATIC_BUCKET = 64  # cache lengths are rounded up to this, so prompts of similar length share one compiled step


class StaticDecoder:
    """The per-token step with fixed shapes, compiled once per (rows, cache length) and reused across calls.

    Attention runs over the whole cache with a mask, the position lives in a device tensor updated in place,
    and the cache and tables are tensors with fixed addresses, so on CUDA the step is captured as a CUDA
    graph (`mode="reduce-overhead"`). It owns its KV cache for as long as it is kept on the JanusLM
    (`drop_static_decoders(lm)` frees it; a cancelled or failed run drops it too).
    """

    def __init__(self, lm: JanusLM, rows: int, max_len: int):
        cfg, device, dtype = lm.model.cfg, lm.device, lm.dtype
        self.model = lm.model
        self.cache = KVCache(cfg, rows, max_len, device, dtype)
        self.cos = torch.zeros((rows, 1, max_len, cfg.head_dim), device=device, dtype=dtype)
        self.sin = torch.zeros_like(self.cos)
        self.key_valid = torch.ones((rows, max_len), device=device, dtype=torch.bool)
        self.positions = torch.arange(max_len, device=device)
        self.pos = torch.zeros((1,), device=device, dtype=torch.long)
        for t in (*self.cache.k, *self.cache.v, self.cos, self.sin, self.key_valid, self.positions, self.pos):
            torch._dynamo.mark_static_address(t)
        mode = "reduce-overhead" if device.type == "cuda" else None
        self._compiled = torch.compile(self._step, mode=mode, fullgraph=True, dynamic=False)

    def prepare(self, cos, sin, key_valid, prompt_len: int):
        """Load this call's rotary tables and padding mask into the fixed buffers; returns them."""
        n = cos.shape[2]
        self.cos[:, :, :n].copy_(cos.expand(self.cos.shape[0], -1, -1, -1))
        self.sin[:, :, :n].copy_(sin.expand(self.sin.shape[0], -1, -1, -1))
        self.key_valid.fill_(True)
        if key_valid is not None:
            self.key_valid[:, : key_valid.shape[1]].copy_(key_valid)
        return self.cos, self.sin, (None if key_valid is None else self.key_valid[:, :n])

    def _step(self, x):
        mask = ((self.positions <= self.pos) & self.key_valid)[:, None, None]
        cos, sin = self.cos.index_select(2, self.pos), self.sin.index_select(2, self.pos)
        return self.model.forward_hidden(x, cos, sin, self.cache, self.pos, mask)[:, -1]

    def step(self, x, pos: int):
        self.pos.copy_(self.positions[pos])  # device-side copy: no host sync
        return self._compiled(x).clone()  # graph outputs are overwritten by the next replay


def static_decoder(lm: JanusLM, rows: int, max_len: int) -> StaticDecoder:
    length = -(-max_len // STATIC_BUCKET) * STATIC_BUCKET
    key = (rows, length)
    if key not in lm.static_decoders:
        lm.static_decoders[key] = StaticDecoder(lm, rows, length)
    return lm.static_decoders[key]


def drop_static_decoders(lm: JanusLM) -> None:
    """Free the compiled steps and their KV caches kept on `lm`."""
    for dec in lm.static_decoders.values():
        dec.cache.release()
    lm.static_decoders.clear()
