"""What the benchmarks start beside the app: a free loopback port, a throw-away PostgreSQL
cluster and a Redis server, each stopped on the way out, and the app's own commands."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def postgresql(directory: Path) -> Iterator[str]:
    """A throw-away cluster from ``scripts/pg-cluster.sh``; its URL. Stopped on the way out."""
    script = str(ROOT / "scripts" / "pg-cluster.sh")
    try:
        started = subprocess.run(
            [script, "start", str(directory)], stdout=subprocess.PIPE, text=True, check=True
        )
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([script, "stop", str(directory)], check=False)


@contextmanager
def redis_server(directory: Path, bench: str) -> Iterator[str]:
    """Debian's redis-server on a free loopback port, keeping nothing on disk; its URL.
    Production settings count rate limits in a storage all workers share."""
    import redis

    executable = shutil.which("redis-server")
    if executable is None:
        sys.exit(f"{bench}: redis-server not found: run `make bench`, which installs it")
    port = free_port()
    server = subprocess.Popen(
        [executable, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory)]
        + ["--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        with redis.Redis.from_url(url) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        sys.exit(f"{bench}: redis-server did not start on port {port}")
                    time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def flask(env: Mapping[str, str], *args: str, bench: str) -> str:
    """Run ``flask --app app …`` as an operator would, with ``env`` as its only ``KEYS_*``
    settings; its standard output."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KEYS_")} | dict(env)
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        sys.exit(f"{bench}: flask {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout
