"""Writing results safely: nothing overwritten silently, nothing half-written under its final name.

- Every file is written to a hidden temporary name in the destination folder, flushed to disk, then
  linked into place with `os.link`, which fails if the name is taken: a crash, a full disk or a race with
  another run never leaves a truncated file under the final name and never replaces an existing one.
  (Where the file system has no hard links, an existence check + `os.replace` is used instead.)
- Numbered outputs continue after the highest number already in the folder, like the editor's SaveImage
  counter: a second run into the same folder adds files, it does not replace the first run's.
- `check_output_dir` proves before a long run that the output folder can be written (and has room) without
  creating anything: it probes the nearest folder that exists. `OutputFolder` makes the folder only when the
  first file is written, and a run that fails removes the folders it created and left empty, so a refused or
  failed run leaves the file system as it found it (an existing folder is never removed).
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


def _nearest_existing(folder: Path) -> Path:
    """`folder` itself if it exists, else its closest ancestor that does."""
    p = folder
    try:
        while not p.exists() and p.parent != p:
            p = p.parent
    except OSError as exc:  # e.g. a parent that may not be searched
        raise _explain(exc, folder) from exc
    return p


def check_output_dir(folder: str | Path, need_bytes: int = 0) -> Path:
    """Prove, before any long work, that `folder` is (or can be made) a writable folder with `need_bytes` free.

    Nothing is created: a missing folder is checked through its nearest existing parent (a probe file is
    written there and removed at once); the folder itself is made when the first file is written."""
    folder = Path(folder).expanduser()
    base = _nearest_existing(folder)
    if not base.is_dir():
        if base == folder:
            raise OutputError(f"--output {folder} is an existing file, not a folder; give a folder name.",
                              input="output")
        raise OutputError(f"--output {folder}: a part of this path ({base}) is a file, not a folder.", input="output")
    probe = _tmp_name(base / "write-test")
    try:
        probe.write_bytes(b"\0" * min(need_bytes, 4096))
    except OSError as exc:
        raise _explain(exc, folder) from exc
    finally:
        with suppress(OSError):
            probe.unlink()
    free = shutil.disk_usage(base).free
    if need_bytes and free < need_bytes:
        raise OutputError(f"--output {folder}: only {free / 1e6:.1f} MB free, about {need_bytes / 1e6:.1f} MB "
                          "needed; free some space or choose another folder.", input="output")
    return folder


def make_dirs(folder: str | Path) -> list[Path]:
    """Create `folder` and its missing parents; returns the folders this call created, outermost first."""
    folder = Path(folder).expanduser()
    missing = []
    p = folder
    while not p.exists() and p.parent != p:
        missing.append(p)
        p = p.parent
    created: list[Path] = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            if d.is_dir():  # made meanwhile by someone else: not ours to remove
                continue
            remove_empty_dirs(created)
            raise OutputError(f"--output {folder}: a part of this path ({d}) is a file, not a folder.",
                              input="output") from None
        except OSError as exc:
            remove_empty_dirs(created)
            raise _explain(exc, d) from exc
        created.append(d)
    return created


def remove_empty_dirs(dirs: list[Path]) -> None:
    """Remove the folders of `dirs` (outermost first) that are empty, innermost first; never one with files."""
    for d in reversed(dirs):
        with suppress(OSError):  # not empty (someone wrote there) or gone: leave it
            d.rmdir()


class OutputFolder:
    """An output folder for one run: checked when made, created on the first write, tidied when the run fails.

        with OutputFolder(args.output, need_bytes) as out:   # refuses an unwritable / full target, creates nothing
            ...long work...
            out.write_new_file("00000.png", write)            # the folder (and parents) appear here

    Leaving the block with an exception removes the folders this run created if they are still empty; with
    `remove_written=True` it first removes the files this run wrote (a half-made checkpoint is worse than none).
    """

    def __init__(self, folder: str | Path, need_bytes: int = 0, remove_written: bool = False):
        self.path = check_output_dir(folder, need_bytes)
        self.remove_written = remove_written
        self.created: list[Path] = []
        self.written: list[Path] = []

    def ensure(self) -> Path:
        """Create the folder now (if missing); returns its path."""
        self.created += make_dirs(self.path)
        return self.path

    def write_new_file(self, name: str, write: Callable[[Path], None], overwrite: bool = False) -> Path:
        self.ensure()
        path = write_new_file(self.path / name, write, overwrite)
        self.written.append(path)
        return path

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            return
        if self.remove_written:
            for path in self.written:
                with suppress(OSError):
                    path.unlink()
        remove_empty_dirs(self.created)


def check_new_file(path: str | Path, overwrite: bool = False, need_bytes: int = 0) -> Path:
    """Before a long run: `path`'s folder is writable and `path` is not taken (unless `overwrite`)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"--output {path} is a folder; give a file name (e.g. {path / 'tokens.safetensors'}).",
                          input="output")
    if path.exists() and not overwrite:
        raise OutputError(f"--output {path} already exists; nothing was overwritten. Choose another name or pass "
                          "--overwrite.", input="output")
    check_output_dir(path.parent, need_bytes)
    return path


def next_number(folder: Path, pattern: str = r"(\d{5})\.png") -> int:
    """1 + the highest number of the files in `folder` matching `pattern` (a regex with one group), else 0 (also
    when `folder` does not exist yet)."""
    if not folder.is_dir():
        return 0
    rx = re.compile(pattern)
    numbers = [int(m.group(1)) for name in os.listdir(folder) if (m := rx.fullmatch(name))]
    return max(numbers, default=-1) + 1
