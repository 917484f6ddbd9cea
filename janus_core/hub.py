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
DEMO_NAMES = ("demo", "janus-demo (bundled)")  # the CLI / API name, the loader node's choice
DEMO_FOLDER = Path(__file__).resolve().parent / "demo_model"  # package data (README, "The demo model")
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


QUICK_TIMEOUT_S = 10.0  # one look-up of the repo: enough for a slow link, short enough to say "offline" at once
_UNREACHABLE = {"ConnectError", "ConnectTimeout", "TimeoutException", "NetworkError", "ProxyError", "ReadTimeout",
                "OfflineModeIsEnabled"}  # huggingface_hub's / httpx's names for "no connection", across versions


def _weights_list() -> str:
    return ("config.json, tokenizer.json and the weights (model.safetensors or model-*.safetensors + "
            "model.safetensors.index.json, or pytorch_model.bin or pytorch_model-*.bin + pytorch_model.bin.index.json)")


def _where(target: Path | None) -> str:
    return str(target) if target else "a folder of your choice (then pass that folder as the model)"


def offline_message(repo_id: str, target: Path | None, why: str) -> str:
    return (f"{repo_id} is not on this machine and the Hugging Face hub cannot be reached ({why}). On a machine "
            f"with internet, download {_weights_list()} from https://huggingface.co/{repo_id} and put them in "
            f"{_where(target)}; or connect this machine and run again.")


def _repo_files(repo_id: str) -> tuple[list[str] | None, str | None]:
    """(file names of the repo, None), or (None, why) when the hub cannot be reached; one request, no retries
    (huggingface_hub's own listing retries a refused connection for about 30 s)."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return None, "HF_HUB_OFFLINE is set"
    try:
        info = HfApi().model_info(repo_id, timeout=QUICK_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - classified by name: the hub's exception types vary by version
        names = {c.__name__ for c in type(exc).__mro__}
        if names & _UNREACHABLE or isinstance(exc, OSError):
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return None, f"no connection: {detail}"
        return None, None  # the hub answered (gated, rate limited, ...): snapshot_download reports it
    return [s.rfilename for s in (info.siblings or [])], None


def _missing_dirs(target: Path) -> list[Path]:
    out, p = [], target
    while not p.exists() and p.parent != p:
        out.append(p)
        p = p.parent
    return out


def _remove_if_no_files(dirs: list[Path]) -> None:
    """Remove the folders a failed download created, innermost first, if they hold no file but the hub's empty
    bookkeeping folders (a partial download is kept: huggingface_hub resumes it)."""
    import shutil

    for d in dirs:  # innermost first
        if d.is_dir() and not any(f.is_file() and f.name != ".gitignore" for f in d.rglob("*")):
            shutil.rmtree(d, ignore_errors=True)


def download(repo_id: str, local_dir: str | Path | None = None, tqdm_class=None) -> Path:
    """Fetch `repo_id` into `local_dir` (or the hub cache when None); returns the folder. Offline (HF_HUB_OFFLINE,
    or the hub does not answer): a cached copy if there is one, else at once a DownloadError saying which files
    to put where. A failed download leaves no empty folder behind."""
    if repo_id not in KNOWN_REPOS:
        raise DownloadError(f"{repo_id!r} is not a known Janus checkpoint; known: {', '.join(KNOWN_REPOS)}.")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub is a dependency
        raise DownloadError("huggingface_hub is not installed: pip install huggingface_hub") from exc
    target = Path(local_dir) if local_dir is not None else None
    made = _missing_dirs(target) if target is not None else []
    try:
        files, unreachable = _repo_files(repo_id)
        if unreachable is not None:
            if target is not None:  # resolve_model uses a complete local_dir as is: this one is missing or partial
                raise DownloadError(offline_message(repo_id, target, unreachable))
            try:  # a copy in the hub cache, if any
                return Path(snapshot_download(repo_id, allow_patterns=_patterns(repo_id, None), local_files_only=True))
            except Exception:  # noqa: BLE001 - none cached: the message says what to do
                raise DownloadError(offline_message(repo_id, target, unreachable)) from None
        path = snapshot_download(repo_id, local_dir=str(target) if target else None,
                                 allow_patterns=_patterns(repo_id, files), tqdm_class=tqdm_class)
    except DownloadError:
        _remove_if_no_files(made)
        raise
    except Exception as exc:
        _remove_if_no_files(made)
        raise DownloadError(
            f"Could not download {repo_id} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            f"If this machine is offline, fetch {_weights_list()} from https://huggingface.co/{repo_id} elsewhere "
            f"and put them in {_where(target)}."
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


def demo_folder() -> Path:
    """The bundled demo checkpoint (`--model demo`): a small Janus-Pro-architecture model trained on drawn scenes."""
    if not is_complete(DEMO_FOLDER):
        from .errors import CheckpointError

        raise CheckpointError(f"the bundled demo model is missing or incomplete in {DEMO_FOLDER}: this installation "
                              "lacks its package data. Reinstall janus-ar (pip install --force-reinstall .), or "
                              "rebuild it with training/export.py.")
    return DEMO_FOLDER


def resolve_model(path_or_repo: str | Path, models_dir: str | Path | None = None, tqdm_class=None) -> Path:
    """A checkpoint folder for a local path or a known repo id (downloaded on first use).

    With `models_dir`, repo ids live in `models_dir/<name>` (an existing complete folder is used as is);
    without, in the huggingface_hub cache."""
    if str(path_or_repo) in DEMO_NAMES:
        return demo_folder()
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
    raise DownloadError(f"{repo!r} is neither a checkpoint folder, 'demo' (the bundled demo model) nor a known repo "
                        f"id ({', '.join(KNOWN_REPOS)}).")
