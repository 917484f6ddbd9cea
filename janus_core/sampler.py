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
from functools import partial

import torch

from .errors import GenerationCancelled, PayloadError, SettingError
from .memory import check_fits, sampling_bytes
from .model import KVCache, rope_tables
from .payloads import GRID, NUM_IMAGE_TOKENS, JanusCond, JanusLM, JanusTokens
from .sampling import cfg_mix, draw, fill_noise, probabilities
from .tuning import ThreadTuner, WidthChooser, measure_window_cost, prepare_forms, recall, remember, window_cost_key
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


def check_sampling_memory(lm: JanusLM, batch: int, prompt_len: int, decoding: str = "sequential",
                          window: int = 1) -> None:
    """Refuse a batch whose KV cache + activations cannot fit, before allocating anything (`decoding`: a checked
    one, not "auto"; `window` its checked window)."""
    model = lm.model
    width = forward_width(decoding, window)
    ring = zipar_ring(zipar_schedule(window)) if decoding == "zipar" else 0
    per = sampling_bytes(model.cfg, model.image_vocab, 1, prompt_len, lm.dtype, width, ring)
    need = sampling_bytes(model.cfg, model.image_vocab, batch, prompt_len, lm.dtype, width, ring)
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


DECODING_CHOICES = ("auto", "sequential", "jacobi", "jacobi_grouped", "zipar")
# jacobi_grouped (lossy, opt-in): a draft is also accepted when it is in the output's group (GSD, arXiv
# 2508.07747): within GROUP_RANKS places of it in probability order, GROUP_PROB_GAP of its probability and
# GROUP_DISTANCE (squared L2 of the unit image-token embeddings) of its embedding
GROUP_RANKS = 7
GROUP_PROB_GAP = 0.15
GROUP_DISTANCE = 0.5
DEFAULT_WINDOW = 16  # Jacobi window; see auto_decoding and benchmarks/README.md ("Speculative Jacobi decoding")
# zipar (lossy, opt-in; ZipAR, arXiv 2412.04062): row r + 1 starts once row r has `window` final tokens, and every
# started row advances one token per forward: 23 * window + 24 forwards. Its window is that lead, 4..24 (24 = each
# row waits for the whole row above: the sequential tokens); 8 is LlamaGen-ZipAR's default
ZIPAR_WINDOW = 8
ZIPAR_LEADS = (4, GRID)
DRAFT_INITS = ("up", "left", "random")


def auto_decoding(lm: JanusLM, compile: bool = False) -> str:
    """What decoding="auto" runs. On the CPU, eager: Jacobi with the width chosen forward by forward
    (`tuning.WidthChooser`: a window's yield predicted from the draft hit rate against its cost in one-token
    forwards, measured once per machine and model and kept; window forwards where they pay, one-token steps where
    they do not); the same tokens up to floating-point near-ties, and always the same on a rerun. CUDA is not
    measured yet, and a compiled step has one fixed shape: the sequential loop there."""
    return "jacobi" if lm.device.type == "cpu" and not compile else "sequential"


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
    decoding: str = "auto",
    window: int | None = None,
    draft_init: str = "up",
) -> JanusTokens:
    """Sample `batch_size` images' tokens. temperature 0 = greedy (argmax, for tests and oracles).

    `init_tokens` [B|1, 24, 24] + `keep_mask` [B|1, 24, 24] (True = keep): kept positions are forced to the
    given token, the rest are sampled (the random streams advance identically either way).
    `should_cancel` is polled between steps; True raises GenerationCancelled after freeing the cache.
    `threads`: CPU threads for the loop; None = chosen from the loop's own step times (tuning.ThreadTuner).
    `decoding`: "sequential" (one forward per token), "jacobi" (speculative Jacobi decoding over a window of
    `window` positions, with the sampler's own noise fixed per position: the same tokens in fewer forwards, up to
    floating-point near-ties; `draft_init` says how a position entering the window is first guessed: the token
    one row up, the left neighbour, or a random code), or "auto" (`auto_decoding`: on the CPU, Jacobi with
    one-token steps wherever the window does not pay), or "jacobi_grouped" (lossy, opt-in: Jacobi that also
    accepts a draft in its output's group, `in_group`; other images, fewer forwards), or "zipar" (lossy, opt-in:
    rows decoded in parallel, `zipar_schedule`; `window` is how many tokens a row runs ahead of the next). `window`
    None: 16 for the Jacobi decodings, 8 for zipar. The settings record the decoding, the window, whether it
    adapted, the window's cost it decided by and the forwards used.
    """
    settings = sampler_settings(seed=seed, batch_size=batch_size, cfg=cfg, temperature=temperature, top_k=top_k,
                                top_p=top_p)
    seed, batch_size, cfg, temperature, top_k, top_p = (settings[k] for k in (
        "seed", "batch_size", "cfg", "temperature", "top_k", "top_p"))
    progress_every = integer("progress_every", progress_every, 1, NUM_IMAGE_TOKENS)
    if threads is not None:
        threads = integer("threads", threads, 1, 4 * (os.cpu_count() or 1))
    decoding, window, draft_init = decoding_settings(decoding, window, draft_init)
    check_cond(lm, cond)
    model, cfg_lm, device = lm.model, lm.model.cfg, lm.device
    adaptive = decoding == "auto"
    if adaptive:
        decoding = auto_decoding(lm, compile)
    adaptive = adaptive and decoding == "jacobi"
    grouped = decoding == "jacobi_grouped"
    if decoding == "zipar" and compile:
        raise SettingError("decoding='zipar' runs eager (its forwards change shape as rows start and end); use "
                           "compile=False, or another decoding.", input="compile")
    width = forward_width(decoding, window)
    schedule = zipar_schedule(window) if decoding == "zipar" else None
    init, keep = check_init(init_tokens, keep_mask, batch_size, model.image_vocab)
    prompt_len = max(len(cond.cond_ids), len(cond.uncond_ids))
    max_len = prompt_len + NUM_IMAGE_TOKENS
    if max_len > cfg_lm.max_position_embeddings:
        longest = "prompt" if len(cond.cond_ids) >= len(cond.uncond_ids) else "negative_prompt"
        raise PayloadError(f"{longest} too long: {prompt_len} tokens + 576 image tokens exceed the model's "
                           f"{cfg_lm.max_position_embeddings} positions. Shorten it.", input=longest)
    check_sampling_memory(lm, batch_size, prompt_len, decoding, window)
    if init is not None:
        init, keep = init.to(device), keep.to(device)

    ids, pad = _rows(cond, batch_size, device)
    rows = ids.shape[0]
    # a window may reach past the last image position (its outputs there are dropped): room for it, so every
    # forward has the same shape
    cache_len = max_len + (width - 1 if schedule is None else 0)
    cos, sin, key_valid, prefill_mask = position_tables(cfg_lm, pad, prompt_len, cache_len, device, lm.dtype)

    if device.type == "cpu":
        for r in {rows * width, rows} if adaptive else {rows * width}:
            prepare_forms(model, r)  # the decode products' form, measured here (before any compile)
    decoder = None
    if compile:
        decoder = static_decoder(lm, rows, cache_len, width)
        cos, sin, key_valid = decoder.prepare(cos, sin, key_valid, prompt_len)
        cache = decoder.cache
    else:
        cache = KVCache(cfg_lm, rows, cache_len, device, lm.dtype)
    seeds = [(seed + i) % SEED_MOD for i in range(batch_size)]
    gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    run = _Run(lm, batch_size, cfg, temperature, top_k, top_p, init, keep, gens, progress, progress_every,
               should_cancel, cos, sin, key_valid, cache, decoder, prompt_len)
    ok = False
    tuner = ThreadTuner(device, threads)
    try:
        hidden = model.forward_hidden(model.embed_text(ids), cos[:, :, :prompt_len], sin[:, :, :prompt_len],
                                      cache, 0, prefill_mask)[:, -1]
        cost = None
        if decoding == "jacobi":
            if adaptive:  # measured once per machine and model, then kept: every later run decides alike
                cost_key = window_cost_key(lm, rows, window, torch.get_num_threads())
                cost = recall("window", cost_key)
                if cost is None:
                    cost = measure_window_cost(partial(_throwaway_step, run), window)
                    remember("window", {cost_key: cost})
            if cost is not None and cost >= window:  # no window can pay: the plain loop, nothing to decide
                decoding = "sequential"
        if decoding in ("jacobi", "jacobi_grouped"):
            chooser = WidthChooser(window, adaptive, cost or 1.0)
            out, forwards = _jacobi_loop(run, hidden, window, draft_init, tuner, chooser, grouped)
        elif decoding == "zipar":
            out, forwards = _zipar_loop(run, hidden, schedule, tuner)
        else:
            out, forwards = _sequential_loop(run, hidden, tuner)
        ok = True
    finally:
        tuner.close()
        if decoder is None:
            cache.release()  # a cancel or an error leaves no cache alive (the traceback still holds this frame)
        elif not ok:
            drop_static_decoders(lm)
        del cache, run
    return JanusTokens(
        tokens=out.view(batch_size, GRID, GRID).cpu(),
        seeds=seeds,
        settings={"cfg": cfg, "temperature": temperature, "top_k": top_k, "top_p": top_p,
                  "batch_size": batch_size, "seed": seed, "partial": keep is not None,
                  "quantize": lm.quantize, "decoding": decoding,
                  "window": window if width > 1 or decoding == "zipar" else None,
                  "adaptive": adaptive, "forwards": forwards,
                  "window_cost": cost},
        model=lm.identity.as_dict(),
        prompt=cond.prompt,
    )


def decoding_settings(decoding, window, draft_init) -> tuple[str, int, str]:
    """Checked (decoding, window, draft_init); window None = the decoding's default."""
    if decoding not in DECODING_CHOICES:
        raise SettingError(f"decoding must be one of {', '.join(DECODING_CHOICES)}; got {decoding!r}.",
                           input="decoding")
    if decoding == "zipar":
        window = ZIPAR_WINDOW if window is None else window
        window = integer("window", window, *ZIPAR_LEADS, hint=" For zipar: how many tokens a row runs ahead of "
                         f"the next ({ZIPAR_WINDOW} is the default, {GRID} = no rows in parallel).")
    else:
        window = DEFAULT_WINDOW if window is None else window
        window = integer("window", window, 2, MAX_WINDOW,
                         hint=" Positions each Jacobi forward guesses; 16 is the default.")
    if draft_init not in DRAFT_INITS:
        raise SettingError(f"draft_init must be one of {', '.join(DRAFT_INITS)}; got {draft_init!r}.",
                           input="draft_init")
    return decoding, window, draft_init


MAX_WINDOW = 64


def forward_width(decoding: str, window: int) -> int:
    """The most image positions one forward of this (checked, not "auto") decoding feeds."""
    if decoding in ("jacobi", "jacobi_grouped"):
        return window
    if decoding == "zipar":  # one per started row, plus a stand-in's rewrite
        return max(len(step) for step in zipar_schedule(window))
    return 1


class _Run:
    """What both decode loops share: the settings, the per-image generators, the tables, the cache and the
    callbacks (a plain holder, so the loops stay two readable functions)."""

    def __init__(self, lm, batch, cfg, temperature, top_k, top_p, init, keep, gens, progress, progress_every,
                 should_cancel, cos, sin, key_valid, cache, decoder, prompt_len):
        self.model, self.device = lm.model, lm.device
        self.batch, self.cfg, self.temperature, self.top_k, self.top_p = batch, cfg, temperature, top_k, top_p
        self.init, self.keep, self.gens = init, keep, gens
        self.progress, self.progress_every, self.should_cancel = progress, progress_every, should_cancel
        self.cos, self.sin, self.key_valid, self.cache, self.decoder = cos, sin, key_valid, cache, decoder
        self.prompt_len = prompt_len

    def pick(self, logits: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """Tokens from CFG-mixed logits [..., V] and their positions' Exp(1) noise (None when greedy)."""
        if self.temperature == 0:
            return torch.argmax(logits, dim=-1)
        return draw(probabilities(logits, self.temperature, self.top_k, self.top_p), noise)

    def forward(self, tokens: torch.Tensor, pos: int) -> torch.Tensor:
        """Hidden states [2B, T, H] of image tokens [B, T] (the same for the cond and uncond rows) at cache
        positions pos .. pos + T - 1, written into the cache there."""
        t = tokens.shape[1]
        x = self.model.image_token_embeds(tokens.repeat(2, 1))
        if self.decoder is not None:
            return self.decoder.step(x, pos)
        if t == 1:  # one query: every cached key is in its past
            mask = None if self.key_valid is None else self.key_valid[:, None, None, : pos + 1]
        else:
            keys = torch.arange(pos + t, device=self.device)
            mask = (keys[None] <= (pos + torch.arange(t, device=self.device))[:, None])[None, None]  # causal
            if self.key_valid is not None:
                mask = mask & self.key_valid[:, None, None, : pos + t]
        return self.model.forward_hidden(x, self.cos[:, :, pos : pos + t], self.sin[:, :, pos : pos + t], self.cache,
                                         pos, mask)

    def report(self, done: int, out: torch.Tensor, last_reported: int) -> int:
        """Progress (final tokens only) at every `progress_every` boundary crossed, and the cancel check."""
        if self.progress is not None and (done // self.progress_every > last_reported // self.progress_every
                                          or done == NUM_IMAGE_TOKENS):
            self.progress(done, NUM_IMAGE_TOKENS, out[:, :done])
            last_reported = done
        if self.should_cancel is not None and self.should_cancel():
            raise GenerationCancelled(f"sampling cancelled after {done} of {NUM_IMAGE_TOKENS} tokens")
        return last_reported


def _sequential_loop(run: _Run, hidden: torch.Tensor, tuner: ThreadTuner, out: torch.Tensor | None = None,
                     start: int = 0, drawn: torch.Tensor | None = None, reported: int = 0) -> tuple[torch.Tensor, int]:
    """One forward per token (the reference procedure); returns the tokens and the forwards it ran.

    From `start` on (the Jacobi loop's hand-off): `out` holds the final tokens before it, `hidden` is the state
    that predicts token `start`, and `drawn` [B, k, V] the noise rows already drawn for positions start.. ."""
    b, model = run.batch, run.model
    noise = torch.empty((b, model.image_vocab), dtype=torch.float32, device=run.device)
    if out is None:
        out = torch.empty((b, NUM_IMAGE_TOKENS), dtype=torch.long, device=run.device)
    ahead = 0 if drawn is None else drawn.shape[1]
    for i in range(start, NUM_IMAGE_TOKENS):
        tuner.before()  # each step (head, sampling, forward) is timed under the thread count it ran with
        logits = cfg_mix(model.image_logits(hidden).float(), b, run.cfg)
        if run.temperature > 0:
            if i - start < ahead:
                noise.copy_(drawn[:, i - start])
            else:
                fill_noise(noise, run.gens)
        token = run.pick(logits, noise)
        if run.keep is not None:
            token = torch.where(run.keep[:, i], run.init[:, i], token)
        out[:, i] = token
        reported = run.report(i + 1, out, reported)
        if i + 1 == NUM_IMAGE_TOKENS:
            break  # the last token's embedding is never used
        hidden = run.forward(token[:, None], run.prompt_len + i)[:, -1]
        tuner.after()
    return out, NUM_IMAGE_TOKENS - start


def accepted(drafts: torch.Tensor, outputs: torch.Tensor, also: torch.Tensor | None = None) -> torch.Tensor:
    """Per image, how many positions of a window became final: the first output always (its inputs are all
    final), then one more for every draft, from the left, that equals the output computed at its position
    (each output is only valid while every draft to its left was right). drafts [B, W - 1] are the guesses for
    window positions 1.., outputs [B, W]; `also` [B, W - 1]: drafts confirmed without being equal (grouped)."""
    match = drafts == outputs[:, : drafts.shape[1]]
    if also is not None:
        match = match | also
    return 1 + match.long().cumprod(dim=1).sum(dim=1)


def window_start(n: int) -> int:
    """The first image position a window forward feeds (the last final token, whose output is position n), so
    the cache is written from there on: every entry past the final frontier is overwritten by the next forward."""
    return n - 1


def _jacobi_finalised(n: int, a: int, logits: torch.Tensor) -> None:
    """Called with the CFG-mixed logits [B, >= a, V] that finalised positions n .. n + a - 1 (a hook: the
    teacher-forcing test records them)."""


def _draft_hits(out: torch.Tensor, keep, n: int, a: int, draft_init: str) -> float:
    """How many of the final positions n .. n + a - 1 (n >= 1) hold the draft `guess` first gave them (kept
    positions always do), averaged over the images: what `WidthChooser` tells a model whose drafts hit from one
    whose drafts never do (random weights)."""
    if draft_init == "random":
        return 0.0
    idx = torch.arange(n, n + a, device=out.device)
    source = torch.where(idx >= GRID, idx - GRID, idx - 1) if draft_init == "up" else idx - 1
    hit = out[:, idx] == out[:, source]
    if keep is not None:
        hit |= keep[:, idx]
    return float(hit.float().sum()) / out.shape[0]


def _throwaway_step(run: _Run, width: int) -> None:
    """What a decode step of `width` positions costs (forward, head, CFG mix, draw), on inputs whose results are
    thrown away: it writes the cache only past the final frontier (positions the next real forward rewrites
    before anything reads them) and draws no noise, so the tokens are as if it never ran. At the middle of the
    picture: attention over half the image costs what it costs on average (at the start, a one-token step is
    cheaper than its mean, by a third on the demo model, which made a window look dearer than it is)."""
    tokens = torch.zeros((run.batch, width), dtype=torch.long, device=run.device)
    hidden = run.forward(tokens, run.prompt_len + NUM_IMAGE_TOKENS // 2)
    logits = cfg_mix(run.model.image_logits(hidden).float(), run.batch, run.cfg)
    run.pick(logits, None if run.temperature == 0 else torch.ones_like(logits))


def in_group(drafts: torch.Tensor, outputs: torch.Tensor, probs: torch.Tensor, unit_embed: torch.Tensor):
    """Whether each draft [B, N] lies in its output's group (jacobi_grouped): near it in probability order and in
    probability (probs [B, N, V], the distribution that made the output) and in embedding space."""
    p_draft, p_out = probs.gather(-1, drafts[..., None]), probs.gather(-1, outputs[..., None])  # [B, N, 1]
    rank_gap = ((probs > p_draft).sum(-1) - (probs > p_out).sum(-1)).abs()
    distance = (unit_embed[drafts] - unit_embed[outputs]).pow(2).sum(-1)
    return (rank_gap <= GROUP_RANKS) & ((p_draft - p_out).squeeze(-1).abs() < GROUP_PROB_GAP) & (
        distance < GROUP_DISTANCE)


def _jacobi_loop(run: _Run, hidden: torch.Tensor, window: int, draft_init: str, tuner: ThreadTuner,
                 chooser: WidthChooser, grouped: bool = False) -> tuple[torch.Tensor, int]:
    """Speculative Jacobi decoding with the sampler's own noise (see `sample_tokens`).

    Noise: every position's Exp(1) row is drawn from the image's generator when the position enters the window,
    in position order, i.e. exactly the rows the sequential loop draws, so token i is the same function of the
    tokens before it in both loops. Only the window's rows exist at a time (a ring of `window` rows).
    Batches run in lockstep: the frontier advances by the smallest accepted count of the batch (an image that
    accepted more keeps its right tokens as drafts, which its next forward confirms).
    `chooser` may run some forwards one token wide (decoding="auto"): that is the sequential step exactly (the
    last final token in, the next token out), and the drafts to its right wait for the next window forward.
    `grouped` (lossy): a draft in its output's group (`in_group`) counts as confirmed and stays final (its
    right neighbours were computed from it)."""
    b, model, device, n_tok = run.batch, run.model, run.device, NUM_IMAGE_TOKENS
    vocab = model.image_vocab
    out = torch.empty((b, n_tok), dtype=torch.long, device=device)
    known = torch.zeros((b, n_tok + window), dtype=torch.long, device=device)  # finals, then the current drafts
    noise = torch.empty((b, window, vocab), dtype=torch.float32, device=device) if run.temperature > 0 else None
    drawn = 0  # positions whose noise row has been drawn
    offsets = torch.arange(window, device=device)
    unit_embed = torch.nn.functional.normalize(model.gen_embed.weight.float(), dim=-1) if grouped else None
    rand = torch.Generator(device=device).manual_seed(0x5EED) if draft_init == "random" else None

    def draw_noise(upto: int) -> None:
        nonlocal drawn
        while noise is not None and drawn < min(upto, n_tok):
            fill_noise(noise[:, drawn % window], run.gens)
            drawn += 1

    def guess(first: int, last: int) -> None:
        """Initial drafts for positions first..last (new to the window), left to right."""
        for i in range(first, min(last, n_tok - 1) + 1):
            if draft_init == "random":
                known[:, i] = torch.randint(0, vocab, (b,), generator=rand, device=device)
            elif draft_init == "up" and i >= GRID:
                known[:, i] = known[:, i - GRID]
            else:
                known[:, i] = known[:, i - 1]
            if run.keep is not None:
                known[:, i] = torch.where(run.keep[:, i], run.init[:, i], known[:, i])

    # position 0 comes from the prompt's last hidden state, as in the sequential loop
    draw_noise(1)
    logits = cfg_mix(model.image_logits(hidden).float(), b, run.cfg)
    _jacobi_finalised(0, 1, logits[:, None])
    first = run.pick(logits, None if noise is None else noise[:, 0])
    if run.keep is not None:
        first = torch.where(run.keep[:, 0], run.init[:, 0], first)
    out[:, 0] = known[:, 0] = first
    n, forwards, reported = 1, 1, run.report(1, out, 0)
    guess(1, window - 1)
    filled = window  # positions below this hold a final token or a draft
    tuners = {window: tuner}  # thread counts are tuned per width: a window step and a one-token step differ
    while n < n_tok:
        w = chooser.width()
        if w not in tuners:
            tuners[w] = ThreadTuner(device, None) if tuner.active else tuner
        step_tuner = tuners[w]
        if chooser.settled:  # one-token steps from here on: the plain loop, without the window's bookkeeping
            hidden = run.forward(known[:, n - 1 : n], run.prompt_len + n - 1)[:, -1]
            ahead = None if noise is None else noise[:, [p % window for p in range(n, drawn)]]
            out, rest = _sequential_loop(run, hidden, step_tuner, out, n, ahead, reported)
            forwards += rest
            break
        step_tuner.before()
        start = window_start(n)
        hidden = run.forward(known[:, start : start + w], run.prompt_len + start)  # [2B, w, H]
        forwards += 1
        logits = cfg_mix(model.image_logits(hidden).float(), b, run.cfg)  # [B, w, V]: positions n .. n + w - 1
        draw_noise(n + window)
        positions = n + offsets[:w]
        if noise is None:
            ring = None
        elif w == 1:  # the one-token step: no gather (it must cost what the sequential step costs)
            ring = noise[:, n % window : n % window + 1]
        else:
            ring = noise[:, positions % window]
        if grouped:
            probs = probabilities(logits, run.temperature or 1.0, run.top_k, run.top_p)
            outputs = torch.argmax(logits, dim=-1) if ring is None else draw(probs, ring)
        else:
            outputs = run.pick(logits, ring)
        if run.keep is not None:
            inside = positions.clamp(max=n_tok - 1)
            outputs = torch.where(run.keep[:, inside], run.init[:, inside], outputs)
        if w == 1:
            a = 1
        else:
            drafts = known[:, n : n + w - 1]
            counts = (accepted(drafts, outputs, in_group(drafts, outputs[:, : w - 1], probs[:, : w - 1], unit_embed))
                      if grouped else accepted(drafts, outputs))
            a = min(int(counts.min()), n_tok - n)
        _jacobi_finalised(n, a, logits)
        final = torch.cat([known[:, n : n + a - 1], outputs[:, a - 1 : a]], dim=1) if grouped else outputs[:, :a]
        out[:, n : n + a] = final
        hits = _draft_hits(out, run.keep, n, a, draft_init) if chooser.active else None
        known[:, n : n + w] = outputs  # finals, then this forward's outputs as the next drafts
        known[:, n : n + a] = final
        n += a
        guess(max(filled, n - a + w), n + window - 2)  # every position up to n + window - 2 holds a draft
        filled = max(filled, n - a + w, n + window - 1)
        reported = run.report(n, out, reported)
        chooser.record(w, a, hits)
        step_tuner.after()
    for extra in tuners.values():
        if extra is not tuner:
            extra.close()
    return out, forwards


def zipar_schedule(lead: int) -> list[list[tuple[int, int, int | None]]]:
    """ZipAR's row-parallel order as data: for each forward after the prefill (which gives token 0), its inputs
    (slot, value, target): image token `value`'s final token is fed at image position `slot` (cache position
    prompt_len + slot) and its output draws token `target` (None: an input that only writes the cache).

    Token (r, c) is drawn by forward r * lead + c: each row runs `lead` tokens ahead of the row below, so (r, c)
    sees the row above up to column c + lead - 1 and nothing of it further right (that is the loss). A row starts
    from a stand-in for the last token of the row above, fed at that token's position (the latest final token of
    the row above, as ZipAR does); once that row is complete, its real last token rewrites the stand-in's cache
    entry in the next forward. lead = 24: each row waits for the whole row above, the sequential order."""
    steps = []
    for t in range(1, (GRID - 1) * lead + GRID):
        step = []
        for r in range(GRID):
            c = t - r * lead
            if not 0 <= c < GRID or (r, c) == (0, 0):
                continue
            slot = r * GRID + c - 1
            if c == 0:  # the row's first token: the stand-in, or the real last token of a complete row above
                step.append((slot, (r - 1) * GRID + lead - 1, slot + 1))
            else:
                step.append((slot, slot, slot + 1))
            if r >= 1 and c == GRID - lead and lead < GRID:  # the row above completed in the last forward:
                step.append((r * GRID - 1, r * GRID - 1, None))  # its real last token replaces the stand-in
        steps.append(sorted(step))
    return steps


def zipar_ring(schedule) -> int:
    """Noise rows zipar holds at most: those between the oldest and the newest token one forward draws (each
    forward's targets are in position order, and every forward draws at least one token)."""
    return max(targets[-1] - targets[0] + 1 for targets in
               ([t for _, _, t in step if t is not None] for step in schedule))


def _zipar_finalised(targets: list[int], logits: torch.Tensor, slots: list[int], values: list[int]) -> None:
    """Called per zipar forward with the CFG-mixed logits [B, len(targets), V] that drew `targets`, and the
    forward's inputs (a hook: the context test records them)."""


def _zipar_loop(run: _Run, hidden: torch.Tensor, schedule, tuner: ThreadTuner) -> tuple[torch.Tensor, int]:
    """Rows in parallel (`zipar_schedule`). Every forward feeds its inputs at their own positions (rotary tables
    and cache slots), and each query attends to every cache entry written so far at or before its position: the
    prompt and the final tokens there. Noise: position j's Exp(1) row is drawn in position order, as the
    sequential loop draws it (rows ahead of the oldest unfinished position wait in a ring), so a lead of 24 makes
    the sequential tokens and a shorter lead changes only what each token sees."""
    b, model, device, n_tok = run.batch, run.model, run.device, NUM_IMAGE_TOKENS
    out = torch.zeros((b, n_tok), dtype=torch.long, device=device)
    ring = zipar_ring(schedule)
    noise = torch.empty((b, ring, model.image_vocab), dtype=torch.float32, device=device) if run.temperature > 0 else None
    drawn = 0
    cache_len = run.cache.k[0].shape[2]
    written = torch.zeros(cache_len, dtype=torch.bool, device=device)
    written[: run.prompt_len] = True
    key_pos = torch.arange(cache_len, device=device)

    def draw_noise(upto: int) -> None:
        nonlocal drawn
        while noise is not None and drawn <= upto:
            fill_noise(noise[:, drawn % ring], run.gens)
            drawn += 1

    def finish(idx: torch.Tensor, logits: torch.Tensor) -> None:
        token = run.pick(logits, None if noise is None else noise[:, idx % ring])
        if run.keep is not None:
            token = torch.where(run.keep[:, idx], run.init[:, idx], token)
        out[:, idx] = token

    draw_noise(0)
    logits = cfg_mix(model.image_logits(hidden).float(), b, run.cfg)[:, None]
    _zipar_finalised([0], logits, [], [])
    finish(torch.zeros(1, dtype=torch.long, device=device), logits)
    reported = run.report(1, out, 0)
    # the schedule's index tensors, made once; after forward i, every token before the next forward's first
    # target is final (raster order: what progress reports)
    frontiers = [min(t for _, _, t in step if t is not None) for step in schedule[1:]] + [n_tok]
    plan = []
    as_index = partial(torch.tensor, dtype=torch.long, device=device)
    for step, frontier in zip(schedule, frontiers):
        slots, values, targets = ([item[k] for item in step] for k in range(3))
        heads = [i for i, t in enumerate(targets) if t is not None]
        plan.append((slots, values, [targets[i] for i in heads], as_index(slots) + run.prompt_len,
                     as_index(values), None if len(heads) == len(step) else as_index(heads),
                     as_index([targets[i] for i in heads]), frontier))
    for slots, values, targets, pos, value_idx, head_idx, target_idx, frontier in plan:
        tuner.before()
        written[pos] = True
        mask = (key_pos[None] <= pos[:, None]) & written[None]  # [T, L]
        mask = mask[None, None] if run.key_valid is None else mask[None, None] & run.key_valid[:, None, None]
        x = model.image_token_embeds(out[:, value_idx].repeat(2, 1))
        cos, sin = run.cos.index_select(2, pos), run.sin.index_select(2, pos)
        hidden = model.forward_hidden(x, cos, sin, run.cache, pos, mask)
        if head_idx is not None:  # a stand-in's rewrite draws nothing
            hidden = hidden[:, head_idx]
        logits = cfg_mix(model.image_logits(hidden).float(), b, run.cfg)  # [B, len(targets), V]
        draw_noise(targets[-1])
        _zipar_finalised(targets, logits, slots, values)
        finish(target_idx, logits)
        reported = run.report(frontier, out, reported)
        tuner.after()
    return out, len(schedule) + 1


STATIC_BUCKET = 64  # cache lengths are rounded up to this, so prompts of similar length share one compiled step


class StaticDecoder:
    """The decode step with fixed shapes, compiled once per (rows, cache length, width) and reused across calls.

    `width` input positions per step: 1 for the sequential loop, the window for Jacobi decoding. Attention runs
    over the whole cache with a mask (causal within the step), the position lives in a device tensor updated in
    place, and the cache and tables are tensors with fixed addresses, so on CUDA the step is captured as a CUDA
    graph (`mode="reduce-overhead"`). It owns its KV cache for as long as it is kept on the JanusLM
    (`drop_static_decoders(lm)` frees it; a cancelled or failed run drops it too).
    """

    def __init__(self, lm: JanusLM, rows: int, max_len: int, width: int = 1):
        cfg, device, dtype = lm.model.cfg, lm.device, lm.dtype
        self.model = lm.model
        self.cache = KVCache(cfg, rows, max_len, device, dtype)
        self.cos = torch.zeros((rows, 1, max_len, cfg.head_dim), device=device, dtype=dtype)
        self.sin = torch.zeros_like(self.cos)
        self.key_valid = torch.ones((rows, max_len), device=device, dtype=torch.bool)
        self.positions = torch.arange(max_len, device=device)
        self.pos = torch.zeros((width,), device=device, dtype=torch.long)  # the step's positions
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
        mask = ((self.positions[None] <= self.pos[:, None])[None] & self.key_valid[:, None])[:, None]
        cos, sin = self.cos.index_select(2, self.pos), self.sin.index_select(2, self.pos)
        return self.model.forward_hidden(x, cos, sin, self.cache, self.pos, mask)

    def step(self, x, pos: int):
        """Hidden states [R, width, H] of inputs x [R, width, H] at positions pos .. pos + width - 1."""
        self.pos.copy_(self.positions[pos : pos + self.pos.shape[0]])  # device-side copy: no host sync
        return self._compiled(x).clone()  # graph outputs are overwritten by the next replay


def static_decoder(lm: JanusLM, rows: int, max_len: int, width: int = 1) -> StaticDecoder:
    length = -(-max_len // STATIC_BUCKET) * STATIC_BUCKET
    key = (rows, length, width)
    if key not in lm.static_decoders:
        lm.static_decoders[key] = StaticDecoder(lm, rows, length, width)
    return lm.static_decoders[key]


def drop_static_decoders(lm: JanusLM) -> None:
    """Free the compiled steps and their KV caches kept on `lm`."""
    for dec in lm.static_decoders.values():
        dec.cache.release()
    lm.static_decoders.clear()
