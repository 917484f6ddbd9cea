"""decoding="zipar" (lossy, opt-in): ZipAR's row-parallel order on the project's sampler.

- the schedule: every token drawn once, token (r, c) by forward r * lead + c, inputs final when fed, one stand-in
  per row, rewritten once the row above is complete;
- what each token saw: on a one-layer copy of the model (where a cache entry depends only on its token and
  position; deeper, an entry also keeps what its own query saw when it was fed, as in ZipAR's cache), the logits
  that drew each token equal one forward over exactly the tokens the rule says it could see (the prompt, every
  final token fed by then at its own position, the stand-in until its rewrite), and the token is the sampler's
  pick from them with its position's noise (drawn in raster order);
- a lead of 24 is the sequential order: the sequential sampler's tokens.
"""

import copy
import dataclasses

import pytest
import torch

from janus_core import JanusError, prepare_cond, sample_tokens
from janus_core import sampler as sampler_mod
from janus_core.model import KVCache
from janus_core.sampler import _rows, position_tables, zipar_schedule
from janus_core.sampling import cfg_mix, probabilities

GRID = 24
PROMPT = "a photo of a cat sitting on a red chair"


def drawn_at(lead: int, j: int) -> int:
    """The forward (0 = the prefill) that draws image token j."""
    r, c = divmod(j, GRID)
    return r * lead + c


@pytest.mark.parametrize("lead", [4, 5, 8, 24])
def test_schedule_draws_each_token_once_in_row_parallel_order(lead):
    steps = zipar_schedule(lead)
    assert len(steps) + 1 == 23 * lead + 24
    final_by = {0: 0}  # token -> the forward that drew it
    rewrites = []
    for t, step in enumerate(steps, start=1):
        rows = [tgt // GRID for _, _, tgt in step if tgt is not None]
        assert len(rows) == len(set(rows))  # one token per started row
        for slot, value, target in step:
            assert final_by.get(value, t) < t  # only final tokens are fed
            if target is None:
                rewrites.append((slot, t))
                assert value == slot and slot % GRID == GRID - 1 and final_by[slot] == t - 1
            else:
                assert target == slot + 1 and drawn_at(lead, target) == t
                if target % GRID or lead == GRID:
                    assert value == slot
                else:  # a row's first token: the latest final token of the row above stands in for its last
                    assert value == target - GRID + lead - 1
        for _, _, target in step:
            if target is not None:
                final_by[target] = t
    assert sorted(final_by) == list(range(576))
    assert [s for s, _ in rewrites] == ([r * GRID - 1 for r in range(1, GRID)] if lead < GRID else [])


def _expected_context(lead: int, target: int) -> list[tuple[int, int]]:
    """(slot, token whose value is there) of every image slot the query drawing `target` attends to, by the
    rule: slot k holds token k once fed (by the forward that draws k + 1), except a row's last slot, which holds
    the stand-in from the forward that starts the next row until the one after the row itself completes."""
    t = drawn_at(lead, target)
    seen = []
    for k in range(target):
        r_next, c_next = divmod(k + 1, GRID)
        if c_next == 0 and lead < GRID:  # k is the last slot of row r_next - 1
            if t >= (r_next - 1) * lead + GRID:
                seen.append((k, k))
            elif t >= r_next * lead:
                seen.append((k, (r_next - 1) * GRID + lead - 1))  # the stand-in
        elif drawn_at(lead, k + 1) <= t:
            seen.append((k, k))
    return seen


def _logits_from(lm, cond, tokens: torch.Tensor, context: list[tuple[int, int]], cfg: float) -> torch.Tensor:
    """CFG-mixed logits [V] of the last query of one forward over the prompt and `context` at its positions."""
    model = lm.model
    ids, pad = _rows(cond, 1, lm.device)
    p = ids.shape[1]
    positions = torch.tensor(list(range(p)) + [p + s for s, _ in context])
    cos, sin, key_valid, _ = position_tables(model.cfg, pad, p, p + 576, lm.device, lm.dtype)
    cos, sin = cos.index_select(2, positions), sin.index_select(2, positions)
    n = len(positions)
    mask = torch.ones(n, n, dtype=torch.bool).tril()
    if key_valid is not None:
        mask = mask[None] & (key_valid[:, positions][:, None] | torch.eye(n, dtype=torch.bool))
    mask = mask[:, None] if mask.dim() == 3 else mask[None, None]
    values = tokens[[v for _, v in context]][None]
    x = torch.cat([model.embed_text(ids), model.image_token_embeds(values.repeat(2, 1))], dim=1)
    cache = KVCache(model.cfg, 2, n, lm.device, lm.dtype)
    with torch.inference_mode():
        hidden = model.forward_hidden(x, cos, sin, cache, 0, mask)[:, -1]
        return cfg_mix(model.image_logits(hidden).float(), 1, cfg)[0]


@pytest.fixture(scope="module")
def one_layer(lm):
    """lm with only its first decoder layer (the weights shared, the original untouched)."""
    model = copy.copy(lm.model)
    model._modules = dict(model._modules)
    model.layers = torch.nn.ModuleList(list(lm.model.layers)[:1])
    return dataclasses.replace(lm, model=model, static_decoders={})


def _record(monkeypatch):
    seen = {}

    def hook(targets, logits, slots, values):
        for i, j in enumerate(targets):
            seen[j] = logits[0, i].clone()
    monkeypatch.setattr(sampler_mod, "_zipar_finalised", hook)
    return seen


def test_each_token_is_the_pick_from_what_the_rule_lets_it_see(one_layer, monkeypatch):
    lm = one_layer
    cond = prepare_cond(lm, PROMPT)
    lead, seed = 5, 3
    seen = _record(monkeypatch)
    run = sample_tokens(lm, cond, seed=seed, decoding="zipar", window=lead)
    assert run.settings["decoding"] == "zipar" and run.settings["window"] == lead
    assert run.settings["forwards"] == 23 * lead + 24
    tokens = run.tokens.reshape(-1)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.empty(lm.model.image_vocab)
    checked = 0
    for j in range(576):
        noise.exponential_(1.0, generator=gen)  # position j's row, in raster order
        assert int(torch.argmax(probabilities(seen[j][None], 1.0)[0] / noise)) == int(tokens[j]), j
        if j % 7 == 0 or j % GRID in (0, 1, GRID - 1):  # a sample: starts and ends of rows, and a stride
            expected = _logits_from(lm, cond, tokens, _expected_context(lead, j), 5.0)
            torch.testing.assert_close(seen[j], expected, atol=2e-4, rtol=1e-4, msg=f"token {j}")
            checked += 1
    assert checked > 100
    again = sample_tokens(lm, cond, seed=seed, decoding="zipar", window=lead)
    assert torch.equal(again.tokens, run.tokens)


def test_the_check_fails_when_the_stand_in_is_never_rewritten(one_layer, monkeypatch):
    """A mutation: without the rewrite, rows after the first see the stand-in where the real token belongs."""
    lm = one_layer
    schedule = sampler_mod.zipar_schedule
    monkeypatch.setattr(sampler_mod, "zipar_schedule",
                        lambda lead: [[i for i in step if i[2] is not None] for step in schedule(lead)])
    cond = prepare_cond(lm, PROMPT)
    seen = _record(monkeypatch)
    tokens = sample_tokens(lm, cond, seed=0, decoding="zipar", window=8).tokens.reshape(-1)
    j = 2 * GRID + 20  # row 2 sees row 1's last slot, stood in for
    expected = _logits_from(lm, cond, tokens, _expected_context(8, j), 5.0)
    assert not torch.allclose(seen[j], expected, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("batch,temperature,keep", [(1, 1.0, False), (2, 1.0, True), (1, 0.0, False)])
def test_lead_24_makes_the_sequential_tokens(lm, batch, temperature, keep):
    cond = prepare_cond(lm, PROMPT, "blurry")
    extra = {}
    if keep:
        init = torch.randint(0, lm.model.image_vocab, (1, GRID, GRID), generator=torch.Generator().manual_seed(5))
        mask = torch.zeros(1, GRID, GRID, dtype=torch.bool)
        mask[:, 8:16, 4:20] = True
        extra = {"init_tokens": init, "keep_mask": mask}
    for seed in (0, 1):
        sequential = sample_tokens(lm, cond, seed=seed, batch_size=batch, temperature=temperature,
                                   decoding="sequential", **extra)
        zipar = sample_tokens(lm, cond, seed=seed, batch_size=batch, temperature=temperature, decoding="zipar",
                              window=24, **extra)
        assert torch.equal(zipar.tokens, sequential.tokens)
        assert zipar.settings["forwards"] == 576


def test_zipar_settings_are_checked(lm):
    cond = prepare_cond(lm, PROMPT)
    for window in (3, 25, 2.5):
        with pytest.raises(JanusError, match="window") as err:
            sample_tokens(lm, cond, decoding="zipar", window=window)
        assert err.value.input == "window"
    with pytest.raises(JanusError, match="compile") as err:
        sample_tokens(lm, cond, decoding="zipar", compile=True)
    assert err.value.input == "compile"
    assert sample_tokens(lm, cond, decoding="zipar").settings["window"] == sampler_mod.ZIPAR_WINDOW


def test_progress_reports_the_final_prefix_and_cancel_stops_between_forwards(lm):
    cond = prepare_cond(lm, PROMPT)
    reports = []
    full = sample_tokens(lm, cond, seed=2, decoding="zipar", window=8).tokens.reshape(1, -1)
    sample_tokens(lm, cond, seed=2, decoding="zipar", window=8,
                  progress=lambda done, total, toks: reports.append((done, toks.clone())))
    assert [d for d, _ in reports] == sorted(d for d, _ in reports) and reports[-1][0] == 576
    for done, toks in reports:
        assert toks.shape == (1, done) and torch.equal(toks, full[:, :done])  # final tokens only
    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        return calls["n"] >= 5
    with pytest.raises(JanusError, match="cancelled"):
        sample_tokens(lm, cond, seed=2, decoding="zipar", window=8, should_cancel=cancel)
    assert calls["n"] == 5


@pytest.mark.parametrize("lead", [4, 8, 24])
def test_the_memory_check_counts_the_noise_rows_the_loop_holds(lm, lead):
    """The ring of noise rows drawn ahead spans, at most, the tokens one forward draws; the batch check counts
    it (at lead 4 on the real codebook it is ~100 rows, 6.6 MB per image)."""
    from janus_core.memory import HEADROOM, sampling_bytes

    span = max(max(j for j in range(1, 576) if drawn_at(lead, j) == t) - min(j for j in range(1, 576)
               if drawn_at(lead, j) == t) + 1 for t in range(1, 23 * lead + 24))
    ring = sampler_mod.zipar_ring(zipar_schedule(lead))
    assert ring == span
    cfg, vocab = lm.model.cfg, lm.model.image_vocab
    width = sampler_mod.forward_width("zipar", lead)
    extra = sampling_bytes(cfg, vocab, 4, 20, torch.float32, width, ring) - sampling_bytes(cfg, vocab, 4, 20,
                                                                                          torch.float32, width)
    assert abs(extra - HEADROOM * 4 * ring * vocab * 4) <= 1
