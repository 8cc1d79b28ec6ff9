#!/usr/bin/env bash
# Make sure PostgreSQL server binaries (and PgBouncer) exist for the throwaway test servers.
# Installs Debian's postgresql package only when none is found and we are root on Debian.
set -euo pipefail
PY=${1:-.venv/bin/python}
# PgBouncer too (tests of storekit behind a transaction pooler), whichever server is used.
if ! "$PY" -c 'import sys; from storekit.testing import find_pgbouncer; sys.exit(0 if find_pgbouncer() else 1)' \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "PgBouncer: not found; installing Debian's pgbouncer package"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null
  # Debian may start its own instance on install; the tests start their own, so stop it.
  (command -v service >/dev/null && service pgbouncer stop >/dev/null 2>&1) || true
fi
if [ -n "${STOREKIT_TEST_POSTGRES_URL:-}" ]; then
  echo "PostgreSQL: using STOREKIT_TEST_POSTGRES_URL"
  exit 0
fi
if "$PY" -c 'import sys; from storekit.testing import find_pg_bin; sys.exit(0 if find_pg_bin() else 1)'; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "PostgreSQL: no server binaries found; installing Debian's postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  # Debian starts a cluster on install; the tests start their own, so stop it.
  (command -v pg_ctlcluster >/dev/null && pg_lsclusters -h | awk '{print $1, $2}' |
    while read -r v c; do pg_ctlcluster "$v" "$c" stop || true; done) || true
  exit 0
fi
echo "PostgreSQL: no server binaries found. Install them (apt-get install postgresql)," \
  "set STOREKIT_PG_BIN, or set STOREKIT_TEST_POSTGRES_URL to an existing server." >&2
exit 1
