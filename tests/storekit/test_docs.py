"""Every python block in the README runs as written, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index: int, store_url: str, tmp_path: Path) -> None:
    code = BLOCKS[index]
    postgres = not store_url.startswith("sqlite")
    if code.startswith("# postgres only") and not postgres:
        pytest.skip("this example needs PostgreSQL")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    # The SQLite case is the README's default: no URL set, ./storekit.db in the cwd.
    env.pop("STOREKIT_DATABASE_URL", None)
    if postgres:
        env["DATABASE_URL"] = store_url
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    if postgres:
        password = store_url.split("//", 1)[1].split("@", 1)[0].partition(":")[2]
        assert password not in result.stdout + result.stderr
