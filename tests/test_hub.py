"""Known repo ids resolve through huggingface_hub: a pre-filled local hub cache works offline; a missing one
gives one clear message naming the files and the folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import json, sys
from janus_core.hub import resolve_model
from janus_core.errors import DownloadError
try:
    print(json.dumps({"path": str(resolve_model(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))}))
except DownloadError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def _resolve(hf_home: Path, *args, env_extra=None, full=False):
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run([sys.executable, "-c", SCRIPT, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return (result, out.stderr) if full else result


def _closed_port() -> int:
    """A loopback port nothing listens on (the hub 'cannot be reached' without any traffic leaving the machine)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_without_cache_says_what_to_put_where(tmp_path):
    r = _resolve(tmp_path / "hf", "deepseek-ai/Janus-Pro-7B", str(tmp_path / "models"))
    msg = r["error"]
    assert msg.startswith("deepseek-ai/Janus-Pro-7B is not on this machine and the Hugging Face hub cannot be "
                          "reached (HF_HUB_OFFLINE is set)")
    assert f"put them in {tmp_path / 'models' / 'Janus-Pro-7B'}" in msg
    assert "config.json, tokenizer.json" in msg and "pytorch_model-*.bin" in msg
    assert "LocalEntryNotFoundError" not in msg and "snapshot" not in msg  # the project's words, not the hub's
    assert not (tmp_path / "models").exists()


def test_unreachable_hub_is_reported_at_once_without_retries(tmp_path):
    """Not offline by setting, but no connection: one quick look-up, no ~30 s of huggingface_hub's retries."""
    import time

    t0 = time.monotonic()
    r, stderr = _resolve(tmp_path / "hf", "deepseek-ai/Janus-Pro-1B", str(tmp_path / "models"), full=True,
                         env_extra={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"})
    took = time.monotonic() - t0
    assert "is not on this machine and the Hugging Face hub cannot be reached (no connection" in r["error"]
    assert "Retrying in" not in stderr and took < 20, (took, stderr)
    assert not (tmp_path / "models").exists()  # the failed download left no folder behind
    r = _resolve(tmp_path / "hf", "deepseek-ai/Janus-Pro-1B", env_extra={
        "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"})
    assert "put them in a folder of your choice (then pass that folder as the model)" in r["error"]


def test_cached_snapshot_is_used_offline(tiny_ckpt, tmp_path):
    repo = tmp_path / "hf" / "hub" / "models--deepseek-community--Janus-Pro-1B"
    sha = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / sha
    snap.mkdir(parents=True)
    for f in tiny_ckpt.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    r = _resolve(tmp_path / "hf", "deepseek-community/Janus-Pro-1B")
    assert Path(r["path"]) == snap


def test_existing_models_dir_copy_is_used_without_network(tiny_ckpt, tmp_path):
    dest = tmp_path / "models" / "Janus-Pro-1B"
    dest.mkdir(parents=True)
    for f in tiny_ckpt.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    assert Path(_resolve(tmp_path / "hf", "deepseek-ai/Janus-Pro-1B", str(tmp_path / "models"))["path"]) == dest
    assert "nor a known repo id" in json.dumps(_resolve(tmp_path / "hf", "someone/else", str(tmp_path / "models")))
