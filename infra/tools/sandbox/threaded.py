"""Run a sandbox service (anything with async ``start`` and ``stop``) on an event loop of its own, in a thread."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Protocol


class Service(Protocol):
    def start(self) -> Awaitable[None]: ...

    def stop(self) -> Awaitable[None]: ...


@contextmanager
def in_thread(service: Service, name: str) -> Iterator[asyncio.AbstractEventLoop]:
    """Start ``service`` in a daemon thread (its start's error is raised here); yields its loop; stops it after."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(service.start())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            failure.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(service.stop())
        loop.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    started.wait(30)
    if failure:
        raise RuntimeError(f"{name} did not start: {failure[0]}") from failure[0]
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
