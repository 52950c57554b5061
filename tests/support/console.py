"""The API with the console, served by uvicorn on a free port in a thread, and headless Chromium to drive it.

Playwright for Python is pointed at Debian's ``chromium`` (``make chromium`` installs it): Playwright's own
browser download cannot reach its host here.
"""
from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from infra.settings import Settings
from infra.tools.console.app import create_app


class ConsoleServer:
    def __init__(self, settings: Settings) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ConsoleServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise AssertionError("the API with the console did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Debian's chromium is not installed: `make chromium` (make test does it)")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Chromium for one test module. Playwright's sync API runs an event loop in this thread while it is open, so it
    must close before another module's ``asyncio.run`` (a session-wide browser failed every later asyncio test)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True,
                              args=["--no-sandbox", "--no-proxy-server", "--disable-dev-shm-usage"])
        yield b
        b.close()


def shot(page: object, name: str) -> None:
    """A screenshot of the page when HERALD_TEST_SHOTS names a folder (kept out of the repository)."""
    import os

    folder = os.environ.get("HERALD_TEST_SHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def sign_in_over_http(url: str, key: str) -> object:
    """Sign in as the browser does (the sign-in form's CSRF token and cookie), then open the overview."""
    import re

    import httpx

    with httpx.Client(base_url=url, timeout=30) as client:
        form = client.get("/console/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf, form.text[:500]
        signed = client.post("/console/login", data={"csrf": csrf[1], "key": key, "next": ""})
        assert signed.status_code == 303, signed.text[:500]
        return client.get("/console/")
