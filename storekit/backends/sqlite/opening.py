"""What sqlite3 opens for a URL: its options as a URI filename, and read-only fallbacks.

A file storekit cannot write (mode=ro, immutable=1, a read-only file or folder) still
opens for reading; a write then fails with OperationalError naming why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

from storekit.url import MEMORY, DatabaseURL

_TRUE = ("1", "true", "yes", "on")
NOT_WRITABLE = "the file or its folder is not writable"


@dataclass(frozen=True)
class Target:
    database: str  # the filename, or a file: URI when uri is set
    uri: bool
    read_only: str | None  # why the database cannot be written, if it cannot


def target(url: DatabaseURL) -> Target:
    options = url.options
    if not options:
        return Target(url.database, False, None)
    reason = None
    if options.get("mode") == "ro":
        reason = "mode=ro"
    if options.get("immutable", "0").lower() in _TRUE:
        reason = "immutable=1"
    return Target(uri_filename(url.database, options), True, reason)


def uri_filename(path: str, options: dict[str, str]) -> str:
    """sqlite.org/uri.html: the path percent-encoded, so "?" and "#" stay in the name."""
    if path == MEMORY:
        name = "file::memory:"
    else:
        name = ("file://" if path.startswith("/") else "file:") + quote(path)
    return f"{name}?{urlencode(options)}"


def creates_file(url: DatabaseURL) -> bool:
    """Only the default mode (rwc) creates the file, so only it creates missing folders."""
    return url.options.get("mode", "rwc") == "rwc"


def immutable_fallback(url: DatabaseURL) -> Target | None:
    """A WAL file on a read-only file system cannot be opened normally: SQLite needs a
    -shm file to share with writers, and there can be no writers there. Read it as
    immutable, unless a -wal file holds commits that immutable would not see."""
    path = Path(url.database)
    options = url.options
    if url.is_memory or options.get("immutable", "0").lower() in _TRUE or not path.is_file():
        return None
    try:
        read_only_fs = bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
        wal_size = os.stat(f"{path}-wal").st_size
    except FileNotFoundError:
        wal_size = 0
    except OSError:
        return None
    if not read_only_fs or wal_size:
        return None
    return Target(uri_filename(url.database, {**options, "immutable": "1"}), True,
                  "its file system is read-only")


def cannot_open_hint(url: DatabaseURL) -> str:
    """Why an existing file in a folder this process cannot write may not open."""
    path = Path(url.database)
    if url.is_memory or not path.is_file() or os.access(path.parent, os.W_OK):
        return ""
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError:
        return ""
    if header[18:20] != b"\x02\x02":  # the file format version bytes: 2 means WAL
        return ""
    return ("; the file is in WAL mode and its folder is not writable, so SQLite cannot "
            "create its -shm file: add ?immutable=1 to the URL to read it if nothing "
            "writes it, or make the folder writable")
