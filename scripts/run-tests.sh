#!/usr/bin/env bash
# The whole pytest suite twice, at the same time: on SQLite and on a throw-away PostgreSQL.
# Each run's output is printed in full when both are done; the exit code is non-zero if either failed.
set -uo pipefail
cd "$(dirname "$0")/.."
pytest=.venv/bin/pytest
logs=$(mktemp -d)
pgdir=$(mktemp -d /tmp/keys-pg.XXXXXX)
trap 'scripts/pg-cluster.sh stop "$pgdir"; rm -rf "$logs"' EXIT

pg_url=$(scripts/pg-cluster.sh start "$pgdir") || { cat "$pgdir"/*.log >&2; exit 1; }

$pytest "$@" >"$logs/sqlite.log" 2>&1 &
sqlite_pid=$!
KEYS_TEST_DATABASE_URL="$pg_url" $pytest "$@" >"$logs/postgresql.log" 2>&1 &
pg_pid=$!
wait $sqlite_pid; sqlite_status=$?
wait $pg_pid; pg_status=$?

for run in sqlite postgresql; do
  echo "================================ pytest on $run ================================"
  cat "$logs/$run.log"
done
echo "SQLite run exited $sqlite_status; PostgreSQL run exited $pg_status."
[ $sqlite_status -eq 0 ] && [ $pg_status -eq 0 ]
