#!/usr/bin/env bash
# The demo: the web server and one task consumer (label runs, mail, periodic jobs), started
# together and stopped together by Ctrl-C. Settings come from the environment (the Makefile's
# demo ones).
set -euo pipefail
BIN=${BIN:-.venv/bin}

"$BIN/flask" --app app tasks worker &
consumer=$!
stop() {
    kill -INT "$consumer" 2>/dev/null || true
    wait "$consumer" 2>/dev/null || true
}
trap stop EXIT INT TERM
"$BIN/flask" --app app run --host 127.0.0.1 --port 5000
