"""What a newcomer runs first: the Makefile's targets and the package metadata."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _make_dry_run(*args: str) -> str:
    result = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_lab_passes_lab_args_through() -> None:
    out = _make_dry_run("lab", "LAB_ARGS=--no-browser --port 8899")
    lab = [line for line in out.splitlines() if "jupyter lab" in line]
    assert len(lab) == 1
    assert "--no-browser --port 8899" in lab[0]
    # Jupyter refuses root without --allow-root, and only root needs it.
    assert ("--allow-root" in lab[0]) == (os.geteuid() == 0)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is new in 3.11")
def test_license_is_an_spdx_string() -> None:
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # A table here makes setuptools print a deprecation banner on every install.
    assert meta["project"]["license"] == "MIT"
    assert any(req.startswith("setuptools>=77") for req in meta["build-system"]["requires"])


def test_the_lock_file_beside_a_database_is_ignored() -> None:
    result = subprocess.run(["git", "check-ignore", "-q", "storekit.db-storekit.lock"],
                            cwd=ROOT, check=False, timeout=60)
    assert result.returncode == 0
