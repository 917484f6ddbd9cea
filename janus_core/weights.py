"""Weight files: discovery, tensor-by-tensor readers, and the key names of both checkpoint layouts.

Readers return one CPU tensor at a time in the file's dtype; the loader casts it to the target dtype
and device at once, so no full-precision copy of the model is ever held. Safetensors files are read
with plain file reads (header + byte ranges, per the documented format) rather than mmap, so that
resident memory stays at "what is kept + one tensor". Pickles go only through
`torch.load(weights_only=True, mmap=True)`.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import re
import struct
import zipfile
from pathlib import Path

import torch

from .config import ORIGINAL
from .errors import CheckpointError

_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}  # fmt: skip

WEIGHT_FILE_PATTERNS = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)


CHUNK_BYTES = 16 << 20

class _SafetensorsFile:
    def __init__(self, path: Path):
        self.path = path
        size = path.stat().st_size
        damaged = "the download is probably truncated or corrupt; delete and re-download it."
        try:
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                if n > size - 8 or n > 100_000_000:
                    raise ValueError("header length beyond end of file")
                header = json.loads(f.read(n))
        except (struct.error, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc}); {damaged}") from exc
        if not isinstance(header, dict):
            raise CheckpointError(f"{path}: malformed safetensors header (a JSON {type(header).__name__}, not an "
                                  f"object); {damaged}")
        self.data_start = 8 + n
        self._staging = None
        self.entries = {}
        for key, meta in header.items():
            if key == "__metadata__":
                continue
            self.entries[key] = self._entry(key, meta, size - self.data_start, damaged)

    def _entry(self, key: str, meta, data_size: int, damaged: str) -> tuple:
        """(shape, dtype, begin, end) of one header entry, checked against the file size and the shape."""
        where = f"{self.path}: tensor {key!r}"
        if not isinstance(meta, dict) or not {"dtype", "shape", "data_offsets"} <= meta.keys():
            raise CheckpointError(f"{where}: malformed header entry (needs dtype, shape and data_offsets); {damaged}")
        shape, offsets = meta["shape"], meta["data_offsets"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise CheckpointError(f"{where}: malformed shape {shape!r}; {damaged}")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise CheckpointError(f"{where}: malformed data_offsets {offsets!r}; {damaged}")
        if meta["dtype"] not in _ST_DTYPES:
            raise CheckpointError(f"{where}: unsupported dtype {meta['dtype']!r}.")
        dtype = _ST_DTYPES[meta["dtype"]]
        begin, end = offsets
        if self.data_start + end > self.data_start + data_size:
            raise CheckpointError(f"{self.path}: truncated file (tensor {key!r} ends at byte {self.data_start + end}, "
                                  f"file has {self.data_start + data_size}). Delete and re-download it.")
        need = math.prod(shape) * dtype.itemsize
        if end - begin != need:
            raise CheckpointError(f"{where}: its byte range holds {end - begin} bytes but shape {shape} of "
                                  f"{meta['dtype']} needs {need}; {damaged}")
        return tuple(shape), dtype, begin, end

    def read(self, key: str) -> torch.Tensor:
        shape, dtype, _, _ = self.entries[key]
        out = torch.empty(shape, dtype=dtype)
        self.copy_into(key, out)
        return out

    def copy_into(self, key: str, dest: torch.Tensor) -> None:
        """Copy (and cast) tensor `key` into `dest` in row blocks of at most CHUNK_BYTES, so reading a large
        tensor needs only one small staging buffer on top of what is kept."""
        shape, dtype, begin, end = self.entries[key]
        if not dest.numel():
            return
        if not shape:  # a scalar
            shape, dest = (1,), dest.view(1)
        row_bytes = (end - begin) // shape[0]
        rows_per_chunk = max(1, CHUNK_BYTES // max(row_bytes, 1))
        need = min(rows_per_chunk, shape[0]) * row_bytes
        if self._staging is None or self._staging.numel() < need:
            # one reused buffer: a fresh one per block would fragment the heap and inflate resident memory
            self._staging = torch.empty(need, dtype=torch.uint8)
        with open(self.path, "rb") as f:
            f.seek(self.data_start + begin)
            for r0 in range(0, shape[0], rows_per_chunk):
                rows = min(rows_per_chunk, shape[0] - r0)
                raw = self._staging[: rows * row_bytes]
                if f.readinto(raw.numpy()) != rows * row_bytes:
                    raise CheckpointError(f"{self.path}: short read for {key!r}; the file is truncated.")
                dest[r0 : r0 + rows].copy_(raw.view(dtype).view(rows, *shape[1:]))


_PICKLE_PROTOCOL = re.compile(rb"^\x80[\x02-\x05]")


def _looks_like_torch_file(path: Path) -> bool:
    """A torch.save file is a zip archive (torch >= 1.6) or a raw pickle (the legacy format)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or bool(_PICKLE_PROTOCOL.match(head))


def _torch_detail(exc: BaseException) -> str:
    """torch's own words, cut to their first sentence: a detail after the project's message, never the message
    (its hints about weights_only=False and its 'Could this error message be improved?' are dropped)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.split(r"\s*\(Could this error message be improved|(?<=[a-z)])\. ", text)[0].rstrip(". ")
    return text if len(text) <= 120 else text[:117] + "..."


class _PickleFile:
    def __init__(self, path: Path):
        self.path = path
        damaged = "delete it and download it again."
        if path.stat().st_size == 0 or not _looks_like_torch_file(path):
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle): it is "
                                  f"damaged or truncated; {damaged}")
        try:
            try:
                sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                # legacy (pre-zip) pickle format cannot be memory-mapped
                sd = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if "weights only" in str(exc).lower():  # torch's restricted unpickler met something that is not a tensor
                found = re.search(r"GLOBAL ([\w.]+)", str(exc))
                what = f"it names {found.group(1)}" if found else _torch_detail(exc)
                raise CheckpointError(
                    f"{path}: refused: this pickle holds code or objects other than tensors ({what}), which a file of "
                    "plain weights never needs; it was not loaded and nothing in it ran. The safe fix is a "
                    "safetensors copy of the weights (model.safetensors) from the model's own repo."
                ) from None
            raise CheckpointError(f"{path}: damaged or truncated (torch: {_torch_detail(exc)}); {damaged}") from None
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{path}: damaged or truncated (torch: {_torch_detail(exc)}); {damaged}") from None
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise CheckpointError(f"{path}: expected a dict of tensors (a state dict), got {type(sd).__name__}.")
        self.sd = sd
        self.entries = {k: (tuple(v.shape),) for k, v in sd.items()}

    def read(self, key: str) -> torch.Tensor:
        return self.sd[key]

    def copy_into(self, key: str, dest: torch.Tensor) -> None:
        dest.copy_(self.sd[key])


def find_weight_files(folder: Path) -> list[Path]:
    """The weight files of a checkpoint folder, preferring safetensors; raises if none or a shard is missing."""
    for name in WEIGHT_FILE_PATTERNS:
        p = folder / name
        if not p.is_file():
            continue
        if not name.endswith(".index.json"):
            return [p]
        try:
            index = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{p}: not a valid shard index ({exc}); re-download it.") from exc
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{p}: not a valid shard index: it needs a non-empty 'weight_map' object "
                                  "(tensor name -> shard file); re-download it.")
        suffix = Path(name[: -len(".index.json")]).suffix  # .safetensors or .bin
        for key, shard in weight_map.items():
            # plain file names only: an index must not point outside its folder
            if not isinstance(shard, str) or Path(shard).name != shard or not shard.endswith(suffix):
                raise CheckpointError(f"{p}: weight_map entry {key!r} -> {shard!r} is not a shard file name in this "
                                      "folder; re-download the index.")
        files = sorted({folder / f for f in weight_map.values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{p} lists shard(s) {', '.join(missing)} that are not in {folder}. "
                                  "Download every shard the index names.")
        return files
    raise CheckpointError(
        f"No weight files in {folder}. Expected one of: {', '.join(WEIGHT_FILE_PATTERNS)} (plus the shards an "
        "index names)."
    )


class WeightReader:
    """All tensors of a checkpoint, by key, readable one at a time."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.files = find_weight_files(folder)
        self._by_key: dict[str, object] = {}
        self.shapes: dict[str, tuple] = {}
        for path in self.files:
            handle = _SafetensorsFile(path) if path.suffix == ".safetensors" else _PickleFile(path)
            for key, entry in handle.entries.items():
                self._by_key[key] = handle
                self.shapes[key] = entry[0]

    def file_of(self, key: str) -> Path:
        return self._by_key[key].path

    def read(self, key: str) -> torch.Tensor:
        return self._by_key[key].read(key)

    def copy_into(self, key: str, dest: torch.Tensor) -> None:
        """Cast-copy tensor `key` into `dest` (same shape) without materialising it whole in the file dtype."""
        self._by_key[key].copy_into(key, dest)

    def close(self) -> None:
        self._by_key.clear()


def fingerprint(folder: Path, files: list[Path]) -> str:
    """A cheap content fingerprint: sha256 over config.json and, per weight file, its name, size and first/last MiB."""
    h = hashlib.sha256()
    cfg = folder / "config.json"
    if cfg.is_file():
        h.update(cfg.read_bytes())
    for path in sorted(files):
        size = path.stat().st_size
        h.update(f"{path.name}:{size}".encode())
        with open(path, "rb") as f:
            h.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(size - (1 << 20))
                h.update(f.read())
    return h.hexdigest()[:16]


# ---- key names -------------------------------------------------------------------------------------------

# Components of the full multimodal model that text-to-image never loads; their keys are accepted unread.
_UNUSED_PREFIXES = {
    ORIGINAL: ("vision_model.", "aligner.", "language_model.lm_head."),
    "transformers": ("model.vision_model.", "model.aligner.", "lm_head."),
}
# Documented tensors inside loaded components that inference does not use.
_UNUSED_KEYS = re.compile(r"(quantize\.codebook_used$|rotary_emb\.inv_freq$)")

_LLM_PREFIX = {ORIGINAL: "language_model.model.", "transformers": "model.language_model."}
_VQ_PREFIX = {ORIGINAL: "gen_vision_model.", "transformers": "model.vqmodel."}
_GEN_NAMES = {
    ORIGINAL: {
        "gen_embed.weight": "gen_embed.weight",
        "gen_aligner.fc1": "gen_aligner.layers.0",
        "gen_aligner.fc2": "gen_aligner.layers.2",
        "gen_head.fc1": "gen_head.output_mlp_projector",
        "gen_head.fc2": "gen_head.vision_head",
    },
    "transformers": {
        "gen_embed.weight": "model.generation_embeddings.weight",
        "gen_aligner.fc1": "model.generation_aligner.fc1",
        "gen_aligner.fc2": "model.generation_aligner.hidden_layers.0",
        "gen_head.fc1": "model.generation_head.proj_out",
        "gen_head.fc2": "model.generation_head.vision_head",
    },
}
_LAYER_PARTS = {
    "attention.wqkv.weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "attention.wo.weight": ("self_attn.o_proj.weight",),
    "feed_forward.w13.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
    "feed_forward.w2.weight": ("mlp.down_proj.weight",),
    "attention_norm.weight": ("input_layernorm.weight",),
    "ffn_norm.weight": ("post_attention_layernorm.weight",),
}
# transformers VQ names -> original VQ names (reference §8.2, inverted)
_VQ_RENAMES = [
    (re.compile(r"^encoder\.down\."), "encoder.conv_blocks."),
    (re.compile(r"^decoder\.up\."), "decoder.conv_blocks."),
    (re.compile(r"\.block\.(\d+)\."), r".res.\1."),
    (re.compile(r"\.mid\.block_1\."), ".mid.0."),
    (re.compile(r"\.mid\.attn_1\."), ".mid.1."),
    (re.compile(r"\.mid\.block_2\."), ".mid.2."),
]


def generator_sources(layout: str, num_layers: int) -> dict[str, tuple[str, ...]]:
    """Our parameter name -> the checkpoint key(s) it is made of (several = concatenated along dim 0)."""
    llm = _LLM_PREFIX[layout]
    out = {"embed_tokens.weight": (llm + "embed_tokens.weight",), "norm.weight": (llm + "norm.weight",)}
    for i in range(num_layers):
        for ours, theirs in _LAYER_PARTS.items():
            out[f"layers.{i}.{ours}"] = tuple(f"{llm}layers.{i}.{t}" for t in theirs)
    for ours, theirs in _GEN_NAMES[layout].items():
        if ours.endswith(".weight"):
            out[ours] = (theirs,)
        else:
            out[ours + ".weight"] = (theirs + ".weight",)
            out[ours + ".bias"] = (theirs + ".bias",)
    return out


def vq_key_map(layout: str, keys) -> dict[str, str]:
    """Original-style VQ name (without prefix) -> checkpoint key, for every VQ key in the file."""
    prefix = _VQ_PREFIX[layout]
    out = {}
    for key in keys:
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if layout != ORIGINAL:
            for pattern, repl in _VQ_RENAMES:
                name = pattern.sub(repl, name)
        out[name] = key
    return out


def classify_unexpected(layout: str, keys, expected: set[str]) -> list[str]:
    """Keys that are neither expected, nor in a component this task skips, nor documented as unused."""
    skip = _UNUSED_PREFIXES[layout]
    return sorted(k for k in keys if k not in expected and not k.startswith(skip) and not _UNUSED_KEYS.search(k))


# ---- understanding (vision tower, aligner, text head): loaded only when an image is described ------------

_VISION_PREFIX = {ORIGINAL: "vision_model.vision_tower.", "transformers": "model.vision_model."}
_VISION_NAMES = {  # our tower name -> checkpoint name (without the prefix); "{i}" = block index
    ORIGINAL: {
        "patch_embed.weight": ("patch_embed.proj.weight",), "patch_embed.bias": ("patch_embed.proj.bias",),
        "pos_embed": ("pos_embed",), "norm.weight": ("norm.weight",), "norm.bias": ("norm.bias",),
        "blocks.{i}.norm1.{p}": ("blocks.{i}.norm1.{p}",), "blocks.{i}.norm2.{p}": ("blocks.{i}.norm2.{p}",),
        "blocks.{i}.attn.qkv.{p}": ("blocks.{i}.attn.qkv.{p}",), "blocks.{i}.attn.proj.{p}": ("blocks.{i}.attn.proj.{p}",),
        "blocks.{i}.mlp.fc1.{p}": ("blocks.{i}.mlp.fc1.{p}",), "blocks.{i}.mlp.fc2.{p}": ("blocks.{i}.mlp.fc2.{p}",),
    },
    "transformers": {
        "patch_embed.weight": ("embeddings.patch_embedding.weight",),
        "patch_embed.bias": ("embeddings.patch_embedding.bias",),
        "pos_embed": ("embeddings.position_embedding.weight",),
        "norm.weight": ("post_layernorm.weight",), "norm.bias": ("post_layernorm.bias",),
        "blocks.{i}.norm1.{p}": ("encoder.layers.{i}.layer_norm1.{p}",),
        "blocks.{i}.norm2.{p}": ("encoder.layers.{i}.layer_norm2.{p}",),
        "blocks.{i}.attn.qkv.{p}": tuple(f"encoder.layers.{{i}}.self_attn.{x}_proj.{{p}}" for x in "qkv"),
        "blocks.{i}.attn.proj.{p}": ("encoder.layers.{i}.self_attn.projection_layer.{p}",),
        "blocks.{i}.mlp.fc1.{p}": ("encoder.layers.{i}.mlp.fc1.{p}",),
        "blocks.{i}.mlp.fc2.{p}": ("encoder.layers.{i}.mlp.fc2.{p}",),
    },
}  # fmt: skip
_VISION_BLOCK = {ORIGINAL: re.compile(r"^blocks\.(\d+)\."), "transformers": re.compile(r"^encoder\.layers\.(\d+)\.")}
_ALIGNER_PREFIX = {ORIGINAL: "aligner.layers.", "transformers": "model.aligner."}
_ALIGNER_COMPONENT = {ORIGINAL: "aligner.", "transformers": "model.aligner."}
LM_HEAD_KEY = {ORIGINAL: "language_model.lm_head.weight", "transformers": "lm_head.weight"}
# Stored tower tensors the official forward never uses: the attention-pool head (ignore_head=True).
_UNUSED_VISION = re.compile(r"^attn_pool\.")


def _aligner_key(layout: str, j: int) -> str:
    """The j-th Linear of the aligner: original `layers.{0,2,4..}` (GELUs in between), transformers fc1 / hidden_layers."""
    if layout == ORIGINAL:
        return f"{_ALIGNER_PREFIX[layout]}{2 * j}"
    return f"{_ALIGNER_PREFIX[layout]}fc1" if j == 0 else f"{_ALIGNER_PREFIX[layout]}hidden_layers.{j - 1}"


def vision_block_count(layout: str, keys) -> int:
    """How many tower blocks the checkpoint stores."""
    prefix, pattern = _VISION_PREFIX[layout], _VISION_BLOCK[layout]
    found = {int(m.group(1)) for k in keys if k.startswith(prefix) and (m := pattern.match(k[len(prefix):]))}
    return max(found) + 1 if found else 0


def aligner_depth(layout: str, keys) -> int:
    depth = 0
    while _aligner_key(layout, depth) + ".weight" in keys:
        depth += 1
    return depth


def understanding_sources(layout: str, depth: int, aligner_layers: int) -> dict[str, tuple[str, ...]]:
    """UnderstandingModel parameter name -> checkpoint key(s) (several = concatenated along dim 0: fused q|k|v)."""
    prefix = _VISION_PREFIX[layout]
    out = {}
    for ours, theirs in _VISION_NAMES[layout].items():
        blocks = range(depth) if "{i}" in ours else [None]
        params = ("weight", "bias") if "{p}" in ours else [None]
        for i in blocks:
            for p in params:
                out["vision." + ours.format(i=i, p=p)] = tuple(prefix + t.format(i=i, p=p) for t in theirs)
    for j in range(aligner_layers):
        for p in ("weight", "bias"):
            out[f"aligner.fcs.{j}.{p}"] = (f"{_aligner_key(layout, j)}.{p}",)
    out["lm_head.weight"] = (LM_HEAD_KEY[layout],)
    return out


def unexpected_understanding_keys(layout: str, keys, expected: set[str], depth: int) -> list[str]:
    """Tower / aligner keys that the understanding forward does not read and that are not documented as unused
    (the attention-pool head; blocks after the configured `select_layer`)."""
    vis, ali = _VISION_PREFIX[layout], _ALIGNER_COMPONENT[layout]
    bad = []
    for key in keys:
        if key in expected or not (key.startswith(vis) or key.startswith(ali)):
            continue
        name = key[len(vis):] if key.startswith(vis) else ""
        block = _VISION_BLOCK[layout].match(name)
        if _UNUSED_VISION.match(name) or (block and int(block.group(1)) >= depth):
            continue
        bad.append(key)
    return sorted(bad)
