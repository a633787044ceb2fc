"""Text of molecule files, streamed line by line with one error type for every format (MoleculeFileError).

Lines are read one at a time with a length limit, so a huge file (or one endless line) never has to fit in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from gaga.data.molecules import MoleculeSet, to_molecule_set

MAX_LINE_CHARS = 100_000  # far above any SDF or XYZ line; a longer one means the file is not molecule text
MAX_RECORD_ATOMS = 100_000  # a record declaring more is refused before it is read (bounded memory per record)


class MoleculeFileError(ValueError):
    """A molecule file that cannot be read; the message names the file (and line) and what to fix."""


def numbered_lines(path: Path, kind: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without the line end) of a UTF-8 text file, read lazily.

    MoleculeFileError naming the file (and line) when it cannot be opened, is not UTF-8 text or has an overlong line.
    """
    try:
        stream = path.open("rb")
    except OSError as error:
        raise MoleculeFileError(f"{path}: cannot read the {kind} file ({error.strerror or error})") from None
    with stream:
        number = 0
        while True:
            raw = stream.readline(MAX_LINE_CHARS + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE_CHARS and not raw.endswith(b"\n"):
                raise MoleculeFileError(
                    f"{path}, line {number}: longer than {MAX_LINE_CHARS} bytes; not a {kind} file "
                    "(binary data or a damaged file?)"
                )
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise MoleculeFileError(
                    f"{path}, line {number}: not UTF-8 text; is this really a {kind} file (binary data?)"
                ) from None
            yield number, text.rstrip("\r\n")


def checked_molecule_set(pairs: list, path: Path) -> MoleculeSet:
    """The (Z, positions) pairs read from `path` as a validated MoleculeSet; their problems as MoleculeFileError."""
    try:
        return to_molecule_set(pairs, str(path))
    except ValueError as error:
        raise MoleculeFileError(str(error)) from None
