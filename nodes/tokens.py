"""Token tools: Janus Token Map (IMAGE), Janus Tokens Info (STRING), Save / Load Janus Tokens (.safetensors)."""

from __future__ import annotations

import json
import os
import re

import torch

from ..janus_core import GRID, JanusTokens, token_preview
from ..janus_core.errors import OutputError
from ..janus_core.files import make_dirs, remove_empty_dirs
from ..janus_core.tokens_io import load_tokens, save_tokens
from ..janus_core.vq import check_tokens
from . import host, models
from .errors import for_input, input_error
from .inspector import token_grid_ui

CODEBOOK = 16384  # every released Janus VQ-16; checks use the VQ's own size when one is connected
OUTPUT_SUFFIX = " [output]"


def _check(tokens, node: str, codebook: int = CODEBOOK) -> torch.Tensor:
    with for_input(node, "tokens"):
        if not isinstance(tokens, JanusTokens):
            raise input_error(node, "tokens", f"expected JANUS_TOKENS, got {type(tokens).__name__}.")
        return check_tokens(tokens, codebook, "tokens")


class JanusARTokenMap:
    CATEGORY = "Janus"
    DESCRIPTION = ("Shows tokens without decoding: each token's colour from the model's preview palette (a linear "
                   "map from codebook vectors to RGB, fitted once per model), 24x24 upscaled to 384. Without a "
                   "known palette (e.g. tokens loaded in a new session, no vq connected) colours are by token id.")
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("map",)
    OUTPUT_TOOLTIPS = ("A [batch, 384, 384, 3] picture of the token grid (16x16 pixels per token).",)
    OUTPUT_NODE = True
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"tokens": ("JANUS_TOKENS", {"tooltip": "The tokens to look at."})},
            "optional": {"vq": ("JANUS_VQ", {"tooltip": "Optional: the model's VQ, to fit its preview palette when "
                                                        "it is not known yet."})},
        }

    def render(self, tokens, vq=None):
        codebook = vq.codebook_size if vq is not None else CODEBOOK
        t = _check(tokens, "Janus Token Map", codebook)
        palette, _ = models.palette_for(tokens.model, codebook, vq)
        image = token_preview(palette, t.reshape(t.shape[0], -1)).float() / 255.0
        return {"ui": token_grid_ui(tokens, palette), "result": (image,)}


def tokens_info(tokens: JanusTokens, palette_kind: str = "") -> str:
    t = tokens.tokens
    distinct = [int(torch.unique(t[i]).numel()) for i in range(t.shape[0])]
    model = tokens.model or {}
    lines = [
        f"tokens: {list(t.shape)} ({t.shape[0]} image(s) of {GRID}x{GRID}, {str(t.dtype).replace('torch.', '')})",
        f"seeds: {tokens.seeds}",
        f"settings: {json.dumps(tokens.settings, sort_keys=True, default=str)}",
        f"model: {model.get('name', '?')} (fingerprint {model.get('fingerprint', '?')})",
        f"distinct tokens per image: {distinct} of {t.shape[1] * t.shape[2]}",
        f"index range: {int(t.min())}..{int(t.max())}" if t.numel() else "index range: empty",
    ]
    if tokens.prompt:
        lines.append(f"prompt: {tokens.prompt}")
    if palette_kind:
        lines.append(f"palette: {palette_kind}")
    return "\n".join(lines)


class JanusARTokensInfo:
    CATEGORY = "Janus"
    DESCRIPTION = "Describes tokens as text: shape, seeds, sampling settings, producing model, distinct-token count."
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("info",)
    OUTPUT_TOOLTIPS = ("A multi-line summary of the tokens.",)
    OUTPUT_NODE = True
    FUNCTION = "info"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"tokens": ("JANUS_TOKENS", {"tooltip": "The tokens to describe."})}}

    def info(self, tokens):
        _check(tokens, "Janus Tokens Info")
        palette, kind = models.palette_for(tokens.model)
        text = tokens_info(tokens, kind)
        return {"ui": {"text": [text], **token_grid_ui(tokens, palette)}, "result": (text,)}


# ----------------------------------------------------------------------------------------------- files

def _inside(base: str, path: str) -> bool:
    base, path = os.path.realpath(base), os.path.realpath(path)
    try:
        return os.path.commonpath([base, path]) == base
    except ValueError:  # different drives
        return False


def _safetensors_files(base: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(base, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.endswith(".safetensors") and not f.startswith("."):
                found.append(os.path.relpath(os.path.join(root, f), base).replace(os.sep, "/"))
    return found


def token_files() -> list[str]:
    """Loadable files: .safetensors under the input folder, then those under the output folder marked ' [output]'."""
    inputs = _safetensors_files(host.input_directory())
    outputs = [f + OUTPUT_SUFFIX for f in _safetensors_files(host.output_directory())]
    return inputs + outputs


def resolve_token_file(name: str) -> str:
    """A listed name -> its path; refuses anything outside the input / output folders."""
    if not isinstance(name, str) or not name.strip():
        raise input_error("Load Janus Tokens", "file", "no file chosen.")
    base = host.input_directory()
    rel = name
    if name.endswith(OUTPUT_SUFFIX):
        base, rel = host.output_directory(), name[: -len(OUTPUT_SUFFIX)]
    if os.path.isabs(rel) or not rel.endswith(".safetensors"):
        raise input_error("Load Janus Tokens", "file", f"{name!r} is not a .safetensors file of the input/output "
                                                       "folder.")
    path = os.path.join(base, rel)
    if not _inside(base, path):
        raise input_error("Load Janus Tokens", "file", f"{name!r} points outside the editor's input/output folders.")
    if not os.path.isfile(path):
        raise input_error("Load Janus Tokens", "file", f"{name!r} does not exist (looked in {base}).")
    return path


def save_tokens_file(tokens: JanusTokens, path: str) -> None:
    """Atomically, never replacing an existing file (OutputError if `path` is taken)."""
    save_tokens(tokens, path, overwrite=False)


def load_tokens_file(path: str) -> JanusTokens:
    with for_input("Load Janus Tokens", "file"):
        tokens = load_tokens(path)
        tokens.tokens = check_tokens(tokens, CODEBOOK, os.path.basename(path))
    return tokens


def _next_counter(folder: str, name: str) -> int:
    pattern = re.compile(re.escape(name) + r"_(\d+)_\.safetensors$")
    counters = [int(m.group(1)) for f in (os.listdir(folder) if os.path.isdir(folder) else [])
                if (m := pattern.match(f))]
    return max(counters, default=0) + 1


class JanusARSaveTokens:
    CATEGORY = "Janus"
    DESCRIPTION = ("Saves tokens to <output>/<filename_prefix>_00001_.safetensors with the prompt, seeds, settings "
                   "and model in the file's metadata. Load them back with Load Janus Tokens.")
    RETURN_TYPES = ()
    OUTPUT_TOOLTIPS = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "tokens": ("JANUS_TOKENS", {"tooltip": "The tokens to save."}),
            "filename_prefix": ("STRING", {"default": "janus/tokens",
                                           "tooltip": "File name prefix inside the output folder; may include a "
                                                      "subfolder (janus/tokens). A counter is appended."}),
        }}

    def save(self, tokens, filename_prefix="janus/tokens"):
        node = "Save Janus Tokens"
        _check(tokens, node)
        out = host.output_directory()
        prefix = (filename_prefix or "janus/tokens").replace("\\", "/").strip()
        sub, name = os.path.split(prefix)
        folder = os.path.join(out, sub)
        if os.path.isabs(prefix) or not name or not _inside(out, os.path.join(folder, name)):
            raise input_error(node, "filename_prefix", f"{filename_prefix!r} must be a relative name inside the "
                                                       "output folder.")
        try:
            created = make_dirs(folder)
        except OutputError as exc:
            raise input_error(node, "filename_prefix", str(exc)) from exc
        try:
            for _ in range(100):  # another save may take the number between the scan and the write: take the next
                file = f"{name}_{_next_counter(folder, name):05}_.safetensors"
                try:
                    save_tokens_file(tokens, os.path.join(folder, file))
                    break
                except OutputError as exc:
                    if not os.path.exists(os.path.join(folder, file)):
                        raise input_error(node, "filename_prefix", str(exc)) from exc
        except BaseException:
            remove_empty_dirs(created)  # a failed save leaves no empty subfolder behind
            raise
        return {"ui": {"janus_tokens_files": [{"filename": file, "subfolder": sub, "type": "output"}]}}


class JanusARLoadTokens:
    CATEGORY = "Janus"
    DESCRIPTION = ("Loads tokens saved by Save Janus Tokens from the input folder (or the output folder, marked "
                   "[output]), with their prompt, seeds, settings and model.")
    RETURN_TYPES = ("JANUS_TOKENS",)
    RETURN_NAMES = ("tokens",)
    OUTPUT_TOOLTIPS = ("The saved tokens [batch, 24, 24] with their metadata.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "file": (token_files(), {"tooltip": "A .safetensors token file in the input folder, or in the output "
                                                "folder (marked [output])."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, file):
        try:
            resolve_token_file(file)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the validation message
            return str(exc)
        return True

    @classmethod
    def IS_CHANGED(cls, file, **_hidden):
        try:
            st = os.stat(resolve_token_file(file))
        except Exception:  # noqa: BLE001 - unreadable: always re-run (validation reports the error)
            return float("nan")
        return f"{st.st_mtime_ns}:{st.st_size}"

    def load(self, file):
        return (load_tokens_file(resolve_token_file(file)),)
