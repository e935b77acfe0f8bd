#!/usr/bin/env bash
# A throw-away PostgreSQL cluster from the machine's Debian packages.
#   scripts/pg-cluster.sh start DIR   → starts one in DIR on a free loopback port, prints its URL
#   scripts/pg-cluster.sh stop DIR    → stops it and removes DIR
#   scripts/pg-cluster.sh down DIR    → stops the server but keeps it (an outage, for tests)
#   scripts/pg-cluster.sh up DIR      → starts it again after `down`, on the same port
# As root it runs the server as the unprivileged `postgres` user (PostgreSQL refuses root).
set -euo pipefail
command=${1:?start or stop}
dir=$(realpath -m "${2:?directory}")
cd /  # the server user may not be allowed into the caller's working directory
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bindir/initdb" ] || { echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

serve() {
  # Durability off: a test cluster lives for minutes and is thrown away.
  as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start -o \
    "-c listen_addresses=127.0.0.1 -p $1 -k $dir -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >/dev/null
}

case "$command" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    as_owner "$bindir/initdb" -D "$dir/data" -U keys --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    echo "$port" >"$dir/port"
    serve "$port"
    echo "postgresql+psycopg://keys@127.0.0.1:$port/postgres"
    ;;
  down)
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
  up)
    serve "$(cat "$dir/port")"
    ;;
  stop)
    if [ -d "$dir/data" ]; then as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true; fi
    rm -rf "$dir"
    ;;
  *) echo "usage: $0 start|stop|down|up DIR" >&2; exit 2 ;;
esac
