"""The thread tuner only changes speed: tokens do not depend on the thread count (or on the tuner's switches)."""

import torch

from janus_core import prepare_cond, sample_tokens


def test_tokens_do_not_depend_on_the_thread_count(lm, monkeypatch):
    from janus_core import tuning

    cond = prepare_cond(lm, "a photo of a cat")
    fixed = [sample_tokens(lm, cond, seed=3, batch_size=2, threads=t).tokens for t in (1, 2)]
    assert torch.equal(fixed[0], fixed[1])
    monkeypatch.setattr(tuning, "RETUNE_EVERY", 5)  # switch often during the run
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        tuned = sample_tokens(lm, cond, seed=3, batch_size=2).tokens
    finally:
        torch.set_num_threads(before)
    assert torch.equal(tuned, fixed[0])


def test_kept_measurements_outlive_the_process_and_survive_bad_files(tmp_path, monkeypatch):
    """Product forms measured in one process are read back by the next (no timing at all), from a file
    written atomically; a damaged file is measured over and replaced, an unwritable one only loses the file."""
    import json

    from janus_core import tuning
    from janus_core.model import Linear

    path = tmp_path / "cache" / "tuning.json"
    monkeypatch.setenv("JANUS_TUNING_CACHE", str(path))
    monkeypatch.delenv("JANUS_LINEAR_FORM", raising=False)
    monkeypatch.setattr(tuning, "_KEPT", None)
    monkeypatch.setattr(tuning, "_MEASURED", {})
    timed = []

    def fake_time(layers, rows):
        timed.append(rows)
        return {tuple(m.weight.shape): (1.0, 0.5) for m in layers}  # gemv clearly faster

    monkeypatch.setattr(tuning, "_time_passes", fake_time)
    net = torch.nn.Sequential(Linear(1024, 512, bias=False))
    assert tuning.prepare_forms(net, 2) == {(512, 1024): True} and timed == [2]
    kept = json.loads(path.read_text())["machines"][tuning.machine_key()]["form"]
    assert list(kept.values()) == [True] and not list(path.parent.glob(".*tmp"))
    monkeypatch.setattr(tuning, "_KEPT", None)  # a new process: nothing in memory, the file decides
    monkeypatch.setattr(tuning, "_MEASURED", {})
    monkeypatch.setattr(tuning, "_time_passes", lambda layers, rows: {tuple(m.weight.shape): (0.5, 1.0) for m in layers})
    assert tuning.prepare_forms(net, 2) == {(512, 1024): True}  # as kept, although this clock now says otherwise
    tuning.remember("window", {("window", "abc", torch.bfloat16, 4): 2.5})  # another kind, merged into the file
    data = json.loads(path.read_text())["machines"][tuning.machine_key()]
    assert data["window"] == {"window|abc|bfloat16|4": 2.5} and list(data["form"].values()) == [True]

    path.write_text("{damaged")
    monkeypatch.setattr(tuning, "_KEPT", None)
    monkeypatch.setattr(tuning, "_MEASURED", {})
    assert tuning.recall("window", ("window", "abc", torch.bfloat16, 4)) is None
    assert tuning.prepare_forms(net, 2) == {(512, 1024): False}  # measured again, and the file replaced
    assert list(json.loads(path.read_text())["machines"][tuning.machine_key()]["form"].values()) == [False]

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("JANUS_TUNING_CACHE", str(blocker / "tuning.json"))  # its folder cannot be made
    monkeypatch.setattr(tuning, "_KEPT", None)
    tuning.remember("window", {("k",): 3.0})
    assert tuning.recall("window", ("k",)) == 3.0  # kept for the process all the same
    monkeypatch.setenv("JANUS_TUNING_CACHE", "")
    monkeypatch.setattr(tuning, "_KEPT", None)
    assert tuning.store_path() is None and tuning.recall("window", ("k",)) is None
