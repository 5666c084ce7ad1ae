"""Atomic file writes, so a killed job never leaves a half-written frame or report."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from howard_core.errors import HowardError


def temp_path_for(path: str | os.PathLike) -> Path:
    """A unique hidden temp name next to `path` that keeps its extension.

    The extension is kept because OpenImageIO and FFmpeg pick the file format from it;
    the leading dot keeps it out of sequence discovery and most file browsers.
    """
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{secrets.token_hex(4)}{path.suffix}")


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux's /proc).

    Elsewhere os.umask must be set to read it; the lock keeps two readers here from
    leaving the wrong mask behind.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename a finished temp file onto `path`, with the mode a plain open() would give it.

    Writers differ in the mode they create files with (tempfile.mkstemp and some libraries
    use 0600), and the final file must be readable by whoever the user's umask allows: a
    farm node running as another user, say.
    """
    os.chmod(tmp, 0o666 & ~current_umask())
    os.replace(tmp, path)


def missing_folders(folder: str | os.PathLike) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, outermost first."""
    missing = []
    for path in (Path(folder), *Path(folder).parents):
        if path.exists():
            break
        missing.append(path)
    return missing[::-1]


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove `folders` (as `missing_folders` lists them) innermost first, as far as each is empty: what
    a failed run created and left nothing in, never a file, and never a folder another process filled."""
    for path in reversed(folders):
        try:
            path.rmdir()
        except OSError:
            return


def ensure_writable_dir(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create `folder` (and parents) if missing and prove a file can be created in it."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise HowardError(f"{what} {folder} is a file, not a folder; choose another output location")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HowardError(
            f"{what} {folder} cannot be created ({exc.strerror or exc}); choose another output location"
        ) from exc
    try:
        # os.access is not enough: it ignores read-only mounts, ACLs and root's privileges.
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise HowardError(
            f"{what} {folder} is not writable ({exc.strerror or exc}); fix its permissions or choose another"
        ) from exc
    return folder


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path in `path`'s folder; on success rename it onto `path`, else delete it.

    Missing parent folders are created. The rename is `os.replace`, atomic on one
    filesystem, so readers see the old file or the complete new one, never a partial.
    The file gets the mode the umask gives (0666 & ~umask), whatever mode the writer made it with.

        with atomic_write("out/report.json") as tmp:
            tmp.write_text(json.dumps(report))
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        yield tmp
        publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (see `atomic_write`); returns the path."""
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically (see `atomic_write`); returns the path."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, doc, **dump_options) -> Path:
    """Write `doc` as indented JSON to `path` atomically, streamed to the file as it is encoded.

    json.dumps with an indent builds its text from one small string per value, so a 1,000-frame
    run report (3 MB of JSON) briefly needed about 30 MB; json.dump writes those pieces as they come.
    `dump_options` go to json.dump (default indent=2).
    """
    dump_options.setdefault("indent", 2)
    with atomic_write(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, **dump_options)
            f.write("\n")
    return Path(path)
