"""bench: the harness that measures SQLite and PostgreSQL under concurrent agents.

It runs from the repository root (`python -m bench <command>`) and is not part of
storekit's wheel.
"""

from pathlib import Path

# The repository root: results/, notebooks/ and tests/ are found from here, whatever the
# working directory (a notebook kernel starts in notebooks/).
ROOT = Path(__file__).resolve().parent.parent
