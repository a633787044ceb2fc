"""Text of molecule files, read with one error for every format: the file named, and why it cannot be read."""

from __future__ import annotations

from pathlib import Path


def read_lines(path: Path, kind: str) -> list[str]:
    """The lines of a text file; ValueError naming the file when it cannot be read as UTF-8 text."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read the {kind} file ({error})") from error
