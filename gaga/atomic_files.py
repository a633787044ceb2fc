"""Atomic file replacement: write a temporary file beside the target, then rename it over the target.

A crash or an error while writing (a full disk included) leaves the previous file (or no file) in place, never a
truncated one. Files that matter (checkpoints, data caches, T* caches) also get a digest file `<name>.sha256` (size
and SHA-256) written with them, and `verify_digest` refuses a file changed or truncated since. `locked` serialises
processes that write and read one shared file with its digest (two runs sharing data/). A digest catches damage
(a torn copy, a bad disk, an edit by hand), not a forger, who can rewrite the digest too.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def default_file_mode() -> int:
    """Permissions an ordinary new file gets under the current umask (mkstemp alone would give 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_open(path: str | Path, binary: bool = False) -> Iterator[IO]:
    """Open a temporary file beside `path` (parent folders created) that replaces `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, default_file_mode())
        with os.fdopen(handle, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise OSError(
            error.errno,
            f"{path}: could not write ({error.strerror or error}); the previous file is "
            "unchanged. Free disk space (or fix the folder's permissions) and run again",
        ) from error
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file and a rename; returns the path."""
    with atomic_open(path) as stream:
        stream.write(text)
    return Path(path)


class DigestError(ValueError):
    """A file whose size or SHA-256 differs from the digest recorded when it was written (or, where a digest is
    required, has none); `problem` says what is wrong, without the advice of the message."""

    def __init__(self, message: str, problem: str):
        super().__init__(message)
        self.problem = problem


def digest_path(path: str | Path) -> Path:
    return Path(f"{path}.sha256")


def file_digest(path: str | Path) -> dict:
    """{"size": bytes, "sha256": hex} of a file, read in chunks."""
    sha = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            sha.update(chunk)
    return {"size": Path(path).stat().st_size, "sha256": sha.hexdigest()}


def write_digest(path: str | Path) -> None:
    """Record the size and SHA-256 of `path` beside it (atomically), for `verify_digest`."""
    write_text_atomically(digest_path(path), json.dumps(file_digest(path)) + "\n")


def verify_digest(path: str | Path, required: bool = False) -> None:
    """DigestError naming the file when it differs from its recorded digest; files without a digest pass unless
    `required`."""
    recorded = digest_path(path)
    if not recorded.is_file():
        if not required:
            return
        problem = f"no digest {recorded.name} beside it (written before digests, or the digest was removed)"
        raise DigestError(f"{path}: {problem}; delete it, or write it again", problem)
    try:
        expected = json.loads(recorded.read_text(encoding="utf-8"))
        size, sha = int(expected["size"]), str(expected["sha256"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        problem = f"unreadable digest {recorded.name} ({error})"
        raise DigestError(
            f"{recorded}: unreadable digest ({error}); delete it and the file it describes", problem
        ) from None
    actual_size = Path(path).stat().st_size
    if actual_size != size:
        problem = f"{actual_size} bytes, but {size} were written"
    elif file_digest(path)["sha256"] != sha:
        problem = "its SHA-256 differs from the one recorded when it was written"
    else:
        return
    raise DigestError(
        f"{path}: corrupt or truncated ({problem}); delete it and its {recorded.name}, or replace both",
        f"corrupt or truncated: {problem}",
    )


def write_text_with_digest(path: str | Path, text: str) -> Path:
    """`write_text_atomically` and the file's digest, under its lock (a reader never pairs the text with another
    writer's digest)."""
    with locked(path):
        write_text_atomically(path, text)
        write_digest(path)
    return Path(path)


def read_verified_text(path: str | Path) -> str:
    """The text of a file written by `write_text_with_digest`; DigestError when its digest is missing or unreadable,
    or the file was truncated, corrupted or edited since it was written."""
    with locked(path):
        verify_digest(path, required=True)
        return Path(path).read_text(encoding="utf-8")


@contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on `<path>.lock` for the block; other processes wait. In a read-only folder (nobody
    can write there) the block runs unlocked."""
    lock = Path(f"{path}.lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        stream = open(lock, "a")  # noqa: SIM115 (held for the block)
    except OSError:
        yield
        return
    with stream:
        fcntl.flock(stream.fileno(), fcntl.LOCK_EX)
        yield
