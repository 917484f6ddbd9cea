"""Node-pack fixtures: the pack imported the way ComfyUI imports a custom node folder, and editor stand-ins.

ComfyUI loads `custom_nodes/<folder>/__init__.py` with importlib.util.spec_from_file_location under a module name
derived from its path; here the repository's __init__.py is loaded the same way under an arbitrary name, so the
pack's relative imports are exercised as in the editor. Stand-ins for comfy.*, folder_paths and server are put
in sys.modules per test (and removed after) only when no editor is installed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest

from .standins import Recorder, make_modules

ROOT = Path(__file__).resolve().parents[2]
PACK_NAME = "custom_nodes_x_janus_pack"
EDITOR_INSTALLED = importlib.util.find_spec("folder_paths") is not None and importlib.util.find_spec("comfy") is not None


def import_pack(name: str = PACK_NAME):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[name]
        raise
    return module


@pytest.fixture(scope="session")
def pack():
    return import_pack()


@pytest.fixture
def editor(tmp_path, monkeypatch, pack, tiny_ckpt):
    """A stand-in editor: base folder with models/Janus-Pro/tiny-janus (the tiny checkpoint), input/, output/."""
    if EDITOR_INSTALLED:
        pytest.skip("a real editor is installed; these tests use the stand-ins")
    base = tmp_path / "comfy"
    rec = Recorder()
    mods = make_modules(str(base), rec)
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    for sub in ("models/Janus-Pro", "input", "output", "temp"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    os.symlink(tiny_ckpt, base / "models" / "Janus-Pro" / "tiny-janus")
    pack.nodes.host.register_model_folder()
    yield types.SimpleNamespace(base=base, rec=rec, mods=mods, pack=pack, nodes=pack.nodes)


@pytest.fixture
def node_defs(pack):
    from .executor import CORE_NODES

    return {**CORE_NODES, **pack.NODE_CLASS_MAPPINGS}


_HELD: dict = {}


@pytest.fixture
def tiny_models(editor):
    """(lm, vq) of the tiny checkpoint through the pack's loader (cpu, float32), kept for the whole session."""
    if "models" not in _HELD:
        _HELD["models"] = editor.nodes.JanusARLoader().load("tiny-janus", "float32", "cpu", unique_id="1")
    return _HELD["models"]
