"""Known checkpoints and their download with huggingface_hub (only the files generation needs)."""

from __future__ import annotations

from pathlib import Path

from .errors import DownloadError

KNOWN_REPOS = (
    "deepseek-ai/Janus-Pro-1B",
    "deepseek-ai/Janus-Pro-7B",
    "deepseek-ai/Janus-1.3B",
    "deepseek-community/Janus-Pro-1B",
    "deepseek-community/Janus-Pro-7B",
)
META_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "generation_config.json", "preprocessor_config.json", "processor_config.json"]
SAFETENSORS_FILES = ["model.safetensors", "model-*.safetensors", "model.safetensors.index.json"]
PICKLE_FILES = ["pytorch_model.bin", "pytorch_model-*.bin", "pytorch_model.bin.index.json"]


def local_name(repo_id: str) -> str:
    """Folder name under the models dir: the repo name (`Janus-Pro-1B`), prefixed for the converted copies."""
    org, name = repo_id.split("/", 1)
    return name if org == "deepseek-ai" else f"{name}-{org}"


def _patterns(repo_id: str, files: list[str] | None) -> list[str]:
    if files is not None and any(f.endswith(".safetensors") for f in files):
        return META_FILES + SAFETENSORS_FILES  # skip .bin duplicates where a repo has both
    return META_FILES + SAFETENSORS_FILES + PICKLE_FILES


def download(repo_id: str, local_dir: str | Path | None = None, tqdm_class=None) -> Path:
    """Fetch `repo_id` into `local_dir` (or the hub cache when None); returns the folder. Offline or failed:
    DownloadError saying which files to put where."""
    if repo_id not in KNOWN_REPOS:
        raise DownloadError(f"{repo_id!r} is not a known Janus checkpoint; known: {', '.join(KNOWN_REPOS)}.")
    try:
        from huggingface_hub import list_repo_files, snapshot_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub is a dependency
        raise DownloadError("huggingface_hub is not installed: pip install huggingface_hub") from exc
    target = Path(local_dir) if local_dir is not None else None
    try:
        try:
            files = list_repo_files(repo_id)
        except Exception:  # noqa: BLE001 - offline: fall through to snapshot_download, which can still use a cached copy
            files = None
        path = snapshot_download(repo_id, local_dir=str(target) if target else None,
                                 allow_patterns=_patterns(repo_id, files), tqdm_class=tqdm_class)
    except Exception as exc:
        where = str(target) if target else "a folder of your choice (then pass that folder)"
        raise DownloadError(
            f"Could not download {repo_id} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            f"If this machine is offline, fetch these files from https://huggingface.co/{repo_id} elsewhere and put "
            f"them in {where}: config.json, tokenizer.json and the weights (model.safetensors or model-*.safetensors "
            f"+ model.safetensors.index.json, or pytorch_model.bin or pytorch_model-*.bin + "
            f"pytorch_model.bin.index.json)."
        ) from exc
    return Path(path)


def is_complete(folder: Path) -> bool:
    """config.json, tokenizer.json and every weight file (every shard an index names) are present."""
    from .errors import CheckpointError
    from .weights import find_weight_files

    if not ((folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()):
        return False
    try:
        find_weight_files(folder)
    except CheckpointError:
        return False
    return True


def resolve_model(path_or_repo: str | Path, models_dir: str | Path | None = None, tqdm_class=None) -> Path:
    """A checkpoint folder for a local path or a known repo id (downloaded on first use).

    With `models_dir`, repo ids live in `models_dir/<name>` (an existing complete folder is used as is);
    without, in the huggingface_hub cache."""
    p = Path(path_or_repo).expanduser()
    if p.is_dir():
        return p
    repo = str(path_or_repo)
    if repo in KNOWN_REPOS:
        if models_dir is not None:
            dest = Path(models_dir) / local_name(repo)
            if is_complete(dest):
                return dest
            return download(repo, dest, tqdm_class)  # missing or partial: huggingface_hub resumes it
        return download(repo, None, tqdm_class)
    raise DownloadError(f"{repo!r} is neither a checkpoint folder nor a known repo id ({', '.join(KNOWN_REPOS)}).")
