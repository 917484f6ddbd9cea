"""Custom messages from the nodes to the editor-side extension (web/js). Sent only inside the editor.

Event names and payloads are the contract with web/js (web/js/janus_status.js reads them):
- "janus.sampler.status": {node, step, total, batch, tokens_per_s, eta_s, state}; state is "running",
  then exactly one of "success" / "cancelled" / "error" (the extension clears the status line on those).
  `step` counts token positions of the 24x24 grid (each position is sampled for the whole batch at once);
  `tokens_per_s` is positions per second, `eta_s` the seconds left at that rate. Numbers that are not finite
  are sent as null (JSON has no NaN / Infinity). The Janus Describe Image node sends the same message, with
  `step` = answer tokens (all images at once), `total` = max_new_tokens (capped to the model's context),
  `batch` = images; a running payload may carry `note` (a string, e.g. "answers capped at 285 tokens: ...").
- "janus.download.progress": {node, file, done, total}; bytes (or files, as the downloader counts them);
  total may be null when unknown. The extension hides the bar once done >= total.

"Inside the editor" means: the editor's `server` module is already imported and its PromptServer has an
instance. Nothing here imports `server` (an unrelated module of that name elsewhere on sys.path is never
touched), and a failure to send is swallowed: messages never break or slow down a node.
Messages are rate limited (at most one per `min_interval_s` per node, plus the first and the last).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Self

SAMPLER_EVENT = "janus.sampler.status"
DOWNLOAD_EVENT = "janus.download.progress"
TERMINAL_STATES = ("success", "cancelled", "error")
DEFAULT_MIN_INTERVAL_S = 0.25


def _prompt_server():
    """The editor's PromptServer instance, or None outside the editor (never imports anything)."""
    module = sys.modules.get("server")
    prompt_server = getattr(module, "PromptServer", None) if module is not None else None
    instance = getattr(prompt_server, "instance", None) if prompt_server is not None else None
    if instance is None or not callable(getattr(instance, "send_sync", None)):
        return None
    return instance


def in_editor() -> bool:
    """True when messages can reach the editor (its server is running in this process)."""
    return _prompt_server() is not None


def _send(event: str, data: dict) -> bool:
    instance = _prompt_server()
    if instance is None:
        return False
    try:
        # Like the editor's own progress messages: to the client that queued the prompt (all when unknown).
        instance.send_sync(event, data, getattr(instance, "client_id", None))
    except Exception:  # noqa: BLE001 - a lost message must never break or stop a node
        return False
    return True


def _num(x, ndigits: int = 2):
    """A JSON-safe number: rounded float, or None when missing / not finite."""
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return round(x, ndigits) if math.isfinite(x) else None


def _is_cancel(exc: BaseException | None) -> bool:
    if exc is None:
        return False
    if isinstance(exc, KeyboardInterrupt):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    # the editor's InterruptProcessingException and janus_core's GenerationCancelled
    return bool(names & {"InterruptProcessingException", "GenerationCancelled"})


class SamplerStatus:
    """Rate-limited sampler status messages for one node run.

    `update(step)` after each sampled position (cheap when nothing is sent: one clock read), then exactly
    one `finish(state)`. Also a context manager: leaving the block sends "success", "cancelled" (on an
    interrupt / cancel exception) or "error" unless `finish` was already called.
    Both return True when a message was sent.
    """

    def __init__(self, node_id, total: int, batch: int, min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
                 clock=time.monotonic):
        self.node_id, self.total, self.batch = node_id, total, batch
        self.min_interval_s, self.clock = min_interval_s, clock
        self.started = clock()
        self.last_sent = None
        self.first = None  # (time, step) of the first update: the rate excludes the prompt prefill
        self.finished = False
        self.sent = 0
        self.note = None  # optional text shown with the status (e.g. an answer length capped to the context)

    def _rate(self, now: float, step: int) -> float | None:
        if self.first is not None and step > self.first[1] and now > self.first[0]:
            return (step - self.first[1]) / (now - self.first[0])
        elapsed = now - self.started
        return step / elapsed if step > 0 and elapsed > 0 else None

    def update(self, step: int) -> bool:
        if self.node_id is None or self.finished:
            return False
        now = self.clock()
        if self.first is None:
            self.first = (now, step)
        if (self.last_sent is not None and now - self.last_sent < self.min_interval_s
                and step < self.total):
            return False
        self.last_sent = now
        rate = self._rate(now, step)
        eta = max(self.total - step, 0) / rate if rate else None
        data = {"node": str(self.node_id), "step": int(step), "total": self.total, "batch": self.batch,
                "tokens_per_s": _num(rate), "eta_s": _num(eta, 1), "state": "running"}
        if self.note:
            data["note"] = str(self.note)
        ok = _send(SAMPLER_EVENT, data)
        self.sent += ok
        return ok

    def finish(self, state: str) -> bool:
        if self.node_id is None or self.finished:
            return False
        if state not in TERMINAL_STATES:  # never raise here: finish() is called from `finally` blocks
            state = "error"
        self.finished = True
        ok = _send(SAMPLER_EVENT, {"node": str(self.node_id), "step": None, "total": self.total,
                                   "batch": self.batch, "tokens_per_s": None, "eta_s": None, "state": state})
        self.sent += ok
        return ok

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.finished:
            self.finish("success" if exc is None else "cancelled" if _is_cancel(exc) else "error")


_download_last: dict[tuple[str, str], float] = {}


def send_download_progress(node_id, file: str, done: int, total: int | None, *,
                           min_interval_s: float = DEFAULT_MIN_INTERVAL_S, clock=time.monotonic) -> bool:
    """One download-progress message, rate limited per (node, file): the first, the last (done >= total) and
    at most one per `min_interval_s` in between are sent. Safe to call on every chunk."""
    if node_id is None:
        return False
    key = (str(node_id), str(file))
    complete = total is not None and total > 0 and done >= total
    now = clock()
    last = _download_last.get(key)
    if last is not None and now - last < min_interval_s and not complete:
        return False
    if complete:
        _download_last.pop(key, None)
    else:
        _download_last[key] = now
        if len(_download_last) > 256:  # abandoned downloads never fill memory
            _download_last.pop(next(iter(_download_last)))
    return _send(DOWNLOAD_EVENT, {"node": key[0], "file": key[1], "done": int(done),
                                  "total": None if total is None else int(total)})
