"""What a result file records about the machine it was measured on."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def filesystem(path: Path) -> str:
    """The filesystem type holding path, from the longest matching mount point."""
    try:
        best, kind = "", "unknown"
        target = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mount, fstype = parts[1], parts[2]
            if target.startswith(mount) and len(mount) > len(best):
                best, kind = mount, fstype
        return kind
    except OSError:
        return "unknown"


def fsync_latency(folder: Path, writes: int = 200, size: int = 8192) -> dict[str, float]:
    """Median and p99 seconds of an 8 kB write + fdatasync in folder (what a commit pays)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".fsync-probe-{os.getpid()}"
    block = os.urandom(size)
    samples = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for _ in range(writes):
            t0 = time.perf_counter()
            os.pwrite(fd, block, 0)
            os.fdatasync(fd)
            samples.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    samples.sort()
    return {"fdatasync_p50_s": samples[len(samples) // 2],
            "fdatasync_p99_s": samples[int(len(samples) * 0.99) - 1],
            "fdatasync_ops_per_s": 1 / (sum(samples) / len(samples))}


def git_commit(repo: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                              check=False, timeout=10).stdout.strip()

    commit = git("rev-parse", "HEAD")
    return {"id": commit or None, "dirty": bool(git("status", "--porcelain")) if commit else None,
            "branch": git("rev-parse", "--abbrev-ref", "HEAD") or None}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "storekit": __import__("storekit").__version__,
    }
    try:
        import psycopg
        import psycopg_pool

        out["psycopg"] = psycopg.__version__
        out["psycopg_pool"] = psycopg_pool.__version__
    except ImportError:
        out["psycopg"] = None
    return out


def describe(results_dir: Path, repo: Path) -> dict[str, Any]:
    return {
        "utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "memory_bytes": memory_bytes(),
            "platform": platform.platform(),
            "filesystem": filesystem(results_dir),
            "fsync": fsync_latency(results_dir),
        },
        "versions": versions(),
        "git": git_commit(repo),
    }
