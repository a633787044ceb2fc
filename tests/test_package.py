"""The wheel: built from a copy of the sources, it carries every config and module, the commands and the license.

An installed gaga reads its configs from the wheel (gaga/conf), so a config missing here breaks `gaga-train`.
"""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from gaga.config import CONFIG_DIR, REPO_ROOT


def test_wheel_contains_configs_modules_and_commands(tmp_path):
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPO_ROOT / "gaga", source / "gaga", symlinks=True, ignore=ignore)
    shutil.copytree(CONFIG_DIR, source / "conf", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    build = subprocess.run(
        [sys.executable, "-c", f"from setuptools import build_meta; print(build_meta.build_wheel({str(tmp_path)!r}))"],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    assert "Warning" not in build.stderr, build.stderr[-3000:]  # e.g. setuptools' project.license deprecation
    wheel = zipfile.ZipFile(tmp_path / build.stdout.split()[-1])
    names = set(wheel.namelist())

    configs = {f"gaga/conf/{p.relative_to(CONFIG_DIR)}" for p in CONFIG_DIR.rglob("*.yaml")}
    assert {"gaga/conf/train.yaml", "gaga/conf/sample.yaml", "gaga/conf/experiment/quickstart.yaml"} <= configs
    assert configs <= names, sorted(configs - names)
    assert wheel.read("gaga/conf/train.yaml") == (CONFIG_DIR / "train.yaml").read_bytes()
    modules = {str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "gaga").rglob("*.py") if "conf" not in p.parts}
    assert modules <= names, sorted(modules - names)

    info = next(Path(n).parent for n in names if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: MIT" in wheel.read(f"{info}/METADATA").decode()
    commands = wheel.read(f"{info}/entry_points.txt").decode()
    assert all(f"{name} = gaga." in commands for name in ("gaga-train", "gaga-sample", "gaga-tstar"))
