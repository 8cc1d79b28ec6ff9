"""The wheel holds storekit only: no top-level bench to collide with other packages."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bench import ROOT


@pytest.mark.slow
def test_wheel_contains_storekit_and_no_bench(tmp_path: Path) -> None:
    # A copy of what the build reads, so the build's own files (build/, *.egg-info) stay
    # out of the working tree; bench/ is copied too, so leaving it out is the config's doing.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for package in ("storekit", "bench"):
        shutil.copytree(ROOT / package, src / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    # Offline when the environment can build wheels itself (the dev extra installs
    # `wheel`); otherwise pip fetches the build backend.
    offline = importlib.util.find_spec("wheel") is not None
    out = tmp_path / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(out),
           *(["--no-build-isolation"] if offline else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = out.glob("storekit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert "bench" not in top
    assert {"storekit/__init__.py", "storekit/py.typed"} <= set(names)
    assert top <= {"storekit", *(n.split("/")[0] for n in names if ".dist-info/" in n)}
