"""storekit's own runtime needs only the standard library; psycopg is loaded on demand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import storekit


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=60)


def test_sqlite_use_never_imports_psycopg() -> None:
    result = _python(
        "import sys, storekit\n"
        "db = storekit.create_memory_database(); db.exec('CREATE TABLE t (x)'); db.close()\n"
        "print(sorted(m for m in sys.modules if m.startswith(('psycopg', 'rich', 'pandas'))))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_postgres_url_without_psycopg_names_the_extra() -> None:
    # sys.modules[name] = None makes "import name" fail, as in an environment without it.
    result = _python(
        "import sys\n"
        "sys.modules['psycopg'] = None; sys.modules['psycopg_pool'] = None\n"
        "import storekit\n"
        "try:\n"
        "    storekit.create_database('postgresql://u:hunter2@localhost/db')\n"
        "except storekit.ConfigurationError as exc:\n"
        "    print(exc)\n")
    assert result.returncode == 0, result.stderr
    assert "pip install 'storekit[postgres]'" in result.stdout
    assert "hunter2" not in result.stdout


def test_public_api_is_explicit_and_typed() -> None:
    assert "create_database" in storekit.__all__
    assert "migrate" in storekit.__all__
    assert all(hasattr(storekit, name) for name in storekit.__all__)
    assert (Path(storekit.__file__).parent / "py.typed").is_file()
