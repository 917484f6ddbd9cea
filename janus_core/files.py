"""Writing results safely: nothing overwritten silently, nothing half-written under its final name.

- Every file is written to a hidden temporary name in the destination folder, flushed to disk, then
  linked into place with `os.link`, which fails if the name is taken: a crash, a full disk or a race with
  another run never leaves a truncated file under the final name and never replaces an existing one.
  (Where the file system has no hard links, an existence check + `os.replace` is used instead.)
- Numbered outputs continue after the highest number already in the folder, like the editor's SaveImage
  counter: a second run into the same folder adds files, it does not replace the first run's.
- `prepare_output_dir` creates the folder and proves it writable (and roomy enough) before a long run starts.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from .errors import OutputError


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _explain(exc: OSError, path: Path) -> OutputError:
    if exc.errno == errno.ENOSPC or exc.errno == getattr(errno, "EDQUOT", -1):
        return OutputError(f"cannot write {path}: the disk is full (nothing was left behind); free some space or "
                           "choose another --output.", input="output")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return OutputError(f"cannot write {path}: {exc.strerror.lower()}; choose a folder you can write to.",
                           input="output")
    return OutputError(f"cannot write {path}: {exc.strerror or exc}.", input="output")


def write_new_file(path: str | Path, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Create `path` with `write(tmp_path)`, atomically. Refuses an existing `path` unless `overwrite`."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
            return path
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise OutputError(f"{path} already exists; nothing was overwritten. Choose another name (or pass "
                              "--overwrite where offered).", input="output") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            if path.exists():  # no hard links here: check, then rename (a tiny race window, documented)
                raise OutputError(f"{path} already exists; nothing was overwritten.", input="output") from None
            os.replace(tmp, path)
        return path
    except OSError as exc:
        raise _explain(exc, path) from exc
    finally:
        with suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes(path: str | Path, data: bytes, overwrite: bool = False) -> Path:
    return write_new_file(path, lambda tmp: tmp.write_bytes(data), overwrite)


def copy_file(src: Path, dst: Path) -> Path:
    return write_new_file(dst, lambda tmp: shutil.copy2(src, tmp))


def prepare_output_dir(folder: str | Path, need_bytes: int = 0) -> Path:
    """Create `folder` (and parents) and prove it writable, with `need_bytes` free, before any long work."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--output {folder} is an existing file, not a folder; give a folder name.", input="output")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"--output {folder}: a part of this path is a file, not a folder.", input="output") from None
    except OSError as exc:
        raise _explain(exc, folder) from exc
    probe = _tmp_name(folder / "write-test")
    try:
        probe.write_bytes(b"\0" * min(need_bytes, 4096))
    except OSError as exc:
        raise _explain(exc, folder) from exc
    finally:
        with suppress(OSError):
            probe.unlink()
    free = shutil.disk_usage(folder).free
    if need_bytes and free < need_bytes:
        raise OutputError(f"--output {folder}: only {free / 1e6:.1f} MB free, about {need_bytes / 1e6:.1f} MB "
                          "needed; free some space or choose another folder.", input="output")
    return folder


def check_new_file(path: str | Path, overwrite: bool = False, need_bytes: int = 0) -> Path:
    """Before a long run: `path`'s folder is writable and `path` is not taken (unless `overwrite`)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"--output {path} is a folder; give a file name (e.g. {path / 'tokens.safetensors'}).",
                          input="output")
    if path.exists() and not overwrite:
        raise OutputError(f"--output {path} already exists; nothing was overwritten. Choose another name or pass "
                          "--overwrite.", input="output")
    prepare_output_dir(path.parent, need_bytes)
    return path


def next_number(folder: Path, pattern: str = r"(\d{5})\.png") -> int:
    """1 + the highest number of the files in `folder` matching `pattern` (a regex with one group), else 0."""
    rx = re.compile(pattern)
    numbers = [int(m.group(1)) for name in os.listdir(folder) if (m := rx.fullmatch(name))]
    return max(numbers, default=-1) + 1
