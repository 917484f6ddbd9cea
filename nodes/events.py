"""Custom messages from the nodes to the editor-side extension (web/js). Sent only inside the editor.

Event names and payloads are the contract with web/js:
- "janus.sampler.status": {node, step, total, batch, tokens_per_s, eta_s, state}; state is "running",
  then exactly one of "success" / "cancelled" / "error" (the extension clears the status line on those).
- "janus.download.progress": {node, file, done, total}.
"""

from __future__ import annotations

import time


def _send(event: str, data: dict) -> bool:
    try:
        from server import PromptServer  # the editor's server module; absent outside the editor
    except Exception:
        return False
    instance = getattr(PromptServer, "instance", None)
    if instance is None:
        return False
    instance.send_sync(event, data)
    return True


class SamplerStatus:
    """Rate-limited sampler status messages for one node run."""

    def __init__(self, node_id, total: int, batch: int, min_interval_s: float = 0.25, clock=time.monotonic):
        self.node_id, self.total, self.batch = node_id, total, batch
        self.min_interval_s, self.clock = min_interval_s, clock
        self.started = clock()
        self.last_sent = None

    def update(self, step: int) -> bool:
        now = self.clock()
        if self.node_id is None or (self.last_sent is not None and now - self.last_sent < self.min_interval_s
                                    and step < self.total):
            return False
        self.last_sent = now
        elapsed = max(now - self.started, 1e-9)
        rate = step / elapsed
        eta = (self.total - step) / rate if rate > 0 else None
        return _send("janus.sampler.status", {"node": str(self.node_id), "step": step, "total": self.total,
                                              "batch": self.batch, "tokens_per_s": rate, "eta_s": eta,
                                              "state": "running"})

    def finish(self, state: str) -> bool:
        if self.node_id is None:
            return False
        return _send("janus.sampler.status", {"node": str(self.node_id), "step": None, "total": self.total,
                                              "batch": self.batch, "tokens_per_s": None, "eta_s": None,
                                              "state": state})


def send_download_progress(node_id, file: str, done: int, total: int | None) -> bool:
    if node_id is None:
        return False
    return _send("janus.download.progress", {"node": str(node_id), "file": file, "done": done, "total": total})
