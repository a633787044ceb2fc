"""Runs gaga's equivalence tests against the released EDM and GeoLDM code and writes their report.

    python experiments/equivalence.py [--out experiments/results/equivalence.txt]

The tests (tests/test_equivalence.py) import the released code from the git-ignored checkouts
experiments/edm_reference/ and experiments/geoldm_reference/ (experiments/reference_code.py says how to get them);
a missing checkout's tests are reported as skipped, with the reason. The report holds the date, gaga's commit, the
released commits, pytest's verbose result per test, and the exit status (0: all passed).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("reference_code", ROOT / "experiments" / "reference_code.py")
reference_code = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference_code)


def _commit(folder: Path) -> str:
    result = subprocess.run(["git", "-C", str(folder), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() or "not a git checkout"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "equivalence.txt")
    args = parser.parse_args()
    command = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-rs", "tests/test_equivalence.py"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    now = datetime.datetime.now(datetime.UTC)
    lines = [
        f"gaga equivalence with the released EDM and GeoLDM code, {now:%Y-%m-%d %H:%M} UTC",
        f"gaga commit {_commit(ROOT)}",
    ]
    for name in ("edm", "geoldm"):
        folder = reference_code.FOLDERS[name]
        state = (
            f"{folder.relative_to(ROOT)} ({reference_code.REPOSITORIES[name]}, commit {_commit(folder)})"
            if reference_code.available(name)
            else reference_code.skipped_note(name)
        )
        lines.append(f"{name}: {state}")
    lines += [f"command: python {' '.join(command[1:])}", ""]
    report = [line for line in result.stdout.splitlines() if "::" in line or line.startswith(("=", "SKIPPED"))]
    lines += report + ["", f"exit status {result.returncode}"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    if result.returncode:
        print(result.stdout[-4000:] + result.stderr[-2000:], file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
