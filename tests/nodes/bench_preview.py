"""Measures what the live preview costs the sampler node: the same sampling with the editor's progress hook and
previews, and with the hook but previews off. Benchmark-style (not a test):

    python -m tests.nodes.bench_preview [checkpoint folder] [--repeats 3]

Without a folder it builds the tiny test checkpoint in a temporary folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root))
    from .conftest import import_pack
    from .standins import Recorder, make_modules

    tmp = tempfile.mkdtemp()
    folder = args.folder
    if folder is None:
        from tests.tiny_checkpoint import build_hf_model, write_checkpoint

        folder = write_checkpoint(build_hf_model(), Path(tmp) / "tiny")
    rec = Recorder()
    sys.modules.update(make_modules(tmp, rec))
    pack = import_pack()
    nodes = pack.nodes
    lm, _ = nodes.models.load_models(Path(folder), "auto", "auto")
    cond = nodes.JanusARPrompt().encode(lm, "a cat", "")[0]
    made = []

    class Spy(nodes.sampler._Progress):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    nodes.sampler._Progress = Spy
    results = {"preview": [], "no preview": []}
    with torch.inference_mode():
        for _ in range(args.repeats):
            for mode in ("preview", "no preview"):
                nodes.sampler.PREVIEW_EVERY = 24 if mode == "preview" else 10**9
                t = time.perf_counter()
                nodes.JanusARSampler().sample(lm, cond, 0, 1, 5.0, 1.0, 0, 1.0, unique_id="1")
                results[mode].append(time.perf_counter() - t)
    with_p, without = min(results["preview"]), min(results["no preview"])
    spies = made[0::2]  # the runs with previews
    spent, count = min(m.preview_seconds for m in spies), spies[0].previews
    print(f"sampling 576 tokens: {without:.3f} s with previews off, {with_p:.3f} s with previews on; "
          f"{count} previews, {1000 * spent / count:.2f} ms each = {100 * spent / with_p:.2f} % of sampling time")


if __name__ == "__main__":
    main()
