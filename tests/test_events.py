"""The Python side of the web extension: custom message payloads, rate limiting, nothing sent outside the
editor, and the shape of the token inspector's `ui` payload (nodes/inspector.py)."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import json
import sys
import time
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_events():
    # By file path under a private name: no package import (nodes/__init__ pulls in every node).
    spec = importlib.util.spec_from_file_location("_janus_events_under_test", ROOT / "nodes" / "events.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


events = _load_events()


class FakeClock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class FakePromptServer:
    instance = None

    def __init__(self, client_id="client-1", fail=False):
        self.client_id = client_id
        self.fail = fail
        self.sent: list[tuple[str, dict, object]] = []

    def send_sync(self, event, data, sid=None):
        if self.fail:
            raise RuntimeError("socket gone")
        # what aiohttp's json_response / ws.send_json would do: strict JSON
        json.dumps(data, allow_nan=False)
        self.sent.append((event, data, sid))


@pytest.fixture
def server(monkeypatch):
    """A stand-in for the editor's `server` module with a running PromptServer."""
    module = types.ModuleType("server")
    instance = FakePromptServer()
    cls = type("PromptServer", (), {"instance": instance})
    module.PromptServer = cls
    monkeypatch.setitem(sys.modules, "server", module)
    events._download_last.clear()
    return instance


@pytest.fixture
def no_editor(monkeypatch):
    monkeypatch.delitem(sys.modules, "server", raising=False)
    events._download_last.clear()


# ------------------------------------------------------------------------------------------ outside the editor

def test_nothing_sent_outside_the_editor(no_editor):
    status = events.SamplerStatus("5", 576, 2)
    assert events.in_editor() is False
    assert status.update(1) is False
    assert status.update(576) is False
    assert status.finish("success") is False
    assert events.send_download_progress("3", "model.safetensors", 10, 100) is False


def test_a_foreign_server_module_on_the_path_is_never_imported(no_editor, tmp_path, monkeypatch):
    (tmp_path / "server.py").write_text("raise RuntimeError('must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    status = events.SamplerStatus("5", 576, 1)
    assert status.update(1) is False
    assert status.finish("error") is False
    assert "server" not in sys.modules


def test_server_module_without_instance(monkeypatch):
    module = types.ModuleType("server")
    module.PromptServer = type("PromptServer", (), {"instance": None})
    monkeypatch.setitem(sys.modules, "server", module)
    assert events.in_editor() is False
    assert events.SamplerStatus("1", 576, 1).update(3) is False


def test_no_node_id_sends_nothing(server):
    status = events.SamplerStatus(None, 576, 1)
    assert status.update(1) is False
    assert status.finish("success") is False
    assert events.send_download_progress(None, "f", 1, 2) is False
    assert server.sent == []


def test_a_failing_socket_never_raises(server):
    server.fail = True
    status = events.SamplerStatus("1", 576, 1)
    assert status.update(1) is False
    assert status.finish("error") is False
    assert events.send_download_progress("1", "f", 1, 2) is False


# ---------------------------------------------------------------------------------------------------- payloads

def test_running_and_final_payloads(server):
    clock = FakeClock()
    status = events.SamplerStatus(12, 576, 4, clock=clock)
    clock.advance(2.0)  # prompt prefill
    assert status.update(1) is True
    clock.advance(10.0)
    assert status.update(411) is True
    assert status.finish("success") is True
    (e1, first, sid1), (e2, mid, _), (e3, last, _) = server.sent
    assert e1 == e2 == e3 == "janus.sampler.status"
    assert sid1 == "client-1"  # like the editor's own progress: to the client that queued the prompt
    keys = {"node", "step", "total", "batch", "tokens_per_s", "eta_s", "state"}
    assert set(first) == set(mid) == set(last) == keys
    assert first["node"] == "12" and first["state"] == "running" and first["step"] == 1
    assert first["total"] == 576 and first["batch"] == 4
    # rate measured from the first update (the prefill is not counted): 410 positions in 10 s
    assert mid["tokens_per_s"] == pytest.approx(41.0)
    assert mid["eta_s"] == pytest.approx((576 - 411) / 41.0, abs=0.05)
    assert last == {"node": "12", "step": None, "total": 576, "batch": 4, "tokens_per_s": None, "eta_s": None,
                    "state": "success"}


def test_first_update_has_a_rate_from_the_start_time(server):
    clock = FakeClock()
    status = events.SamplerStatus("1", 576, 1, clock=clock)
    clock.advance(0.5)
    status.update(2)
    payload = server.sent[0][1]
    assert payload["tokens_per_s"] == pytest.approx(4.0)
    assert payload["eta_s"] == pytest.approx(143.5)


def test_numbers_are_json_safe(server):
    clock = FakeClock()
    status = events.SamplerStatus("1", 576, 1, clock=clock)
    status.update(0)  # no time elapsed, no steps: rate unknown -> null, never NaN / Infinity
    payload = server.sent[-1][1]
    assert payload["tokens_per_s"] is None and payload["eta_s"] is None
    json.dumps(payload, allow_nan=False)


def test_exactly_one_terminal_state(server):
    status = events.SamplerStatus("1", 576, 1)
    assert status.finish("cancelled") is True
    assert status.finish("success") is False
    assert status.update(5) is False
    assert [d["state"] for _, d, _ in server.sent] == ["cancelled"]
    assert events.SamplerStatus("1", 576, 1).finish("done") is True  # unknown state: reported as an error
    assert server.sent[-1][1]["state"] == "error"


class InterruptProcessingException(Exception):
    """Same name as the editor's (comfy.model_management) interrupt exception."""


@pytest.mark.parametrize("exc, state", [(None, "success"), (InterruptProcessingException(), "cancelled"),
                                        (KeyboardInterrupt(), "cancelled"), (MemoryError(), "error"),
                                        (ValueError("bad"), "error")])
def test_context_manager_states(server, exc, state):
    def run():
        with events.SamplerStatus("9", 576, 1) as status:
            status.update(1)
            if exc is not None:
                raise exc

    if exc is None:
        run()
    else:
        with pytest.raises(type(exc)):
            run()
    assert server.sent[-1][1]["state"] == state
    assert [d["state"] for _, d, _ in server.sent].count(state) == 1


def test_janus_core_cancel_counts_as_cancelled(server):
    class GenerationCancelled(Exception):
        pass

    with pytest.raises(GenerationCancelled), events.SamplerStatus("9", 576, 1):
        raise GenerationCancelled()
    assert server.sent[-1][1]["state"] == "cancelled"


# ----------------------------------------------------------------------------------------------- rate limiting

def test_sampler_messages_are_rate_limited(server):
    clock = FakeClock()
    status = events.SamplerStatus("1", 576, 2, min_interval_s=0.25, clock=clock)
    for step in range(1, 577):
        clock.advance(0.01)  # 100 tokens/s
        status.update(step)
    steps = [d["step"] for _, d, _ in server.sent]
    assert steps[0] == 1 and steps[-1] == 576  # the first and the last always go out
    assert 20 <= len(steps) <= 26  # 5.76 s at one message per 0.25 s (+ first + last)
    assert all(b > a for a, b in itertools.pairwise(steps))


def test_update_cost_is_negligible(server):
    status = events.SamplerStatus("1", 576, 1)  # real clock
    t0 = time.perf_counter()
    for _ in range(20):
        for step in range(1, 577):
            status.update(step)
        status.last_sent = None
    per_call = (time.perf_counter() - t0) / (20 * 576)
    assert per_call < 50e-6  # a sampling step takes milliseconds; this is well under 1 % of one


def test_download_progress_payload_and_rate_limit(server):
    clock = FakeClock()
    total = 1000
    sent = [events.send_download_progress("3", "model.safetensors", done, total, clock=clock)
            for done in range(0, total + 1, 10) if clock.advance(0.05) is None]
    assert sent[0] is True and sent[-1] is True  # first and complete
    assert 15 <= sum(sent) <= 23  # 5 s at one per >= 0.25 s
    event, payload, sid = server.sent[-1]
    assert event == "janus.download.progress"
    assert payload == {"node": "3", "file": "model.safetensors", "done": 1000, "total": 1000}
    assert sid == "client-1"


def test_download_progress_per_file_and_unknown_total(server):
    clock = FakeClock()
    assert events.send_download_progress(3, "a.bin", 5, None, clock=clock) is True
    assert events.send_download_progress(3, "b.bin", 5, 10, clock=clock) is True  # another file: own limit
    assert events.send_download_progress(3, "a.bin", 6, None, clock=clock) is False
    clock.advance(0.3)
    assert events.send_download_progress(3, "a.bin", 7.0, None, clock=clock) is True
    payload = server.sent[-1][1]
    assert payload == {"node": "3", "file": "a.bin", "done": 7, "total": None}
    assert events.send_download_progress(3, "b.bin", 10, 10, clock=clock) is True  # complete: never dropped


def test_legacy_positional_signatures(server):
    # the signatures the nodes were written against
    status = events.SamplerStatus("4", 576, 1, 0.25, time.monotonic)
    assert status.update(1) is True
    assert events.send_download_progress("4", "f", 1, 2) is True


# ---------------------------------------------------------------------------------- inspector `ui` payload

def _import_inspector():
    """nodes/inspector.py inside a throw-away package named like the editor would (any folder name), without
    running the pack's or nodes/ __init__ (so this stays fast and independent of the other nodes)."""
    if not (ROOT / "nodes" / "inspector.py").exists():
        pytest.skip("nodes/inspector.py not written yet")
    torch = pytest.importorskip("torch")
    pkg_name = "janus_pack_events_test"
    for name in list(sys.modules):
        if name == pkg_name or name.startswith(pkg_name + "."):
            del sys.modules[name]
    pkg = types.ModuleType(pkg_name)
    pkg.__path__ = [str(ROOT)]
    sys.modules[pkg_name] = pkg
    sub = types.ModuleType(pkg_name + ".nodes")
    sub.__path__ = [str(ROOT / "nodes")]
    sys.modules[pkg_name + ".nodes"] = sub
    try:
        inspector = importlib.import_module(pkg_name + ".nodes.inspector")
        core = importlib.import_module(pkg_name + ".janus_core")
    except ImportError as exc:  # the node pack is still being written
        pytest.skip(f"nodes/inspector.py not importable yet: {exc}")
    return torch, inspector, core


def check_grid_payload(ui: dict, batch: int, codebook_size: int) -> None:
    """The contract web/js/janus_grid.js reads (output.janus_grid)."""
    json.dumps(ui, allow_nan=False)
    grids = ui["janus_grid"]
    assert isinstance(grids, list) and len(grids) == batch
    for i, g in enumerate(grids):
        assert {"index", "rows", "cols", "ids", "rgb", "model"} <= set(g)
        assert g["index"] == i and g["rows"] == 24 and g["cols"] == 24
        assert isinstance(g["model"], str)
        assert len(g["ids"]) == 576 and all(type(v) is int and 0 <= v < codebook_size for v in g["ids"])
        assert len(g["rgb"]) == 576 * 3 and all(type(v) is int and 0 <= v <= 255 for v in g["rgb"])


def test_inspector_ui_payload_shape():
    torch, inspector, core = _import_inspector()
    codebook = 64
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, codebook, (3, 24, 24), generator=gen)
    palette = torch.randint(0, 256, (codebook, 3), generator=gen).to(torch.uint8)
    tokens = core.JanusTokens(tokens=ids, seeds=[1, 2, 3], model={"name": "tiny"})
    ui = inspector.token_grid_ui(tokens, palette)
    check_grid_payload(ui, batch=3, codebook_size=codebook)
    g = ui["janus_grid"][1]
    assert g["model"] == "tiny"
    assert g["ids"] == ids[1].reshape(-1).tolist()  # raster order: row-major, as the JS hit-test assumes
    k = 24 * 5 + 7  # row 5, col 7
    assert g["rgb"][3 * k: 3 * k + 3] == palette[ids[1, 5, 7]].tolist()


def test_id_palette_matches_the_js_formula():
    # web/js/janus_grid.js idColor(): mixed = Math.imul(id, 2654435761) >>> 0; r, g, b = low bytes
    _, _, core = _import_inspector()
    preview = importlib.import_module(core.__name__ + ".preview")
    pal = preview.id_palette(16384)
    for i in (0, 1, 2, 255, 4095, 16383):
        mixed = (i * 2654435761) % 2**32
        assert pal[i].tolist() == [mixed & 255, (mixed >> 8) & 255, (mixed >> 16) & 255]
    assert pal[1].tolist() == [0xB1, 0x79, 0x37]  # the value tests/js/grid.test.js pins too
