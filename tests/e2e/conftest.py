"""Browser journeys: the app served for real on loopback, driven by Debian's Chromium.

The served app commits to its own fresh database (not the rolled-back one of the other tests),
mails through the loopback SMTP server, and the journeys save screenshots for the README when
run on SQLite.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, sync_playwright
from werkzeug.serving import make_server

from app import create_app
from core.db import get_database
from tests.conftest import DatabaseFactory, Mailbox, free_port, make_settings
from tests.test_task_faults import start_consumer

CHROMIUM = os.environ.get("KEYS_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
# As the machine's notes require: no background connections on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class LiveServer:
    app: Flask
    url: str
    mailbox: Mailbox
    save_screenshots: bool

    def screenshot(self, page: Page, name: str) -> None:
        if self.save_screenshots:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="session")
def live_server(
    databases: DatabaseFactory,
    smtp_server: tuple[Mailbox, int],
    redis_server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveServer]:
    mailbox, smtp_port = smtp_server
    port = free_port()
    settings = make_settings(
        databases.create("e2e"),
        smtp_port,
        ratelimit_storage_url=redis_server,
        # A host name, not an IP address: browsers refuse WebAuthn on an IP address.
        base_url=f"http://localhost:{port}",
        instance_path=(instance := tmp_path_factory.mktemp("e2e-instance")),
        task_queue_url=f"sqlite:///{instance / 'tasks.sqlite3'}",
        task_check_in_seconds=0.5,
    )
    app = create_app(settings)
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # As `make run` does: a real consumer beside the server runs label runs, mail and jobs.
    consumer = start_consumer(settings, settings.instance_path / "consumer.log")
    yield LiveServer(app, settings.base_url, mailbox, save_screenshots=databases.kind == "sqlite")
    consumer.send_signal(signal.SIGINT)
    consumer.wait(timeout=30)
    server.shutdown()
    thread.join(timeout=10)
    get_database(app).engine.dispose()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: run `make test`, which installs it")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 860}, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()
