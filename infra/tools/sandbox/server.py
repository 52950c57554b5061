"""Starting the sandbox providers: in the foreground (``herald sandbox run``) or in a thread (tests, demo, bench).

    with running_sandbox(settings) as sb:      # settings: where the SDKs will point
        sb.control.inbox("email")
"""
from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from infra.settings import Settings
from infra.tools.sandbox.apns import ApnsServer
from infra.tools.sandbox.control import SandboxControl
from infra.tools.sandbox.http import build_app
from infra.tools.sandbox.smtp import smtp_factory
from infra.tools.sandbox.state import SandboxState
from infra.tools.sandbox.threaded import in_thread
from sinks.apns import is_loopback, sandbox_dir


@dataclass(frozen=True)
class Ports:
    host: str
    sendgrid: int
    twilio: int
    fcm: int
    smtp: int
    apns: int = 0                                  # 0: no APNs sandbox
    apns_dir: Path = field(default_factory=lambda: sandbox_dir(Settings().home))
    apns_key_id: str = "HERALDKEY1"
    apns_key_file: Path | None = None              # a key of one's own (HERALD_APNS__KEY_FILE); default: the generated one
    twilio_auth_token: str = "sandbox-token"       # signs the status callbacks, as the account's token does at Twilio

    @classmethod
    def from_settings(cls, settings: Settings) -> Ports:
        return cls(settings.sandbox_host, _port(settings.sendgrid_host), _port(settings.twilio_base_url),
                   _port(settings.fcm_url), settings.smtp_port,
                   _port(settings.apns.url) if settings.apns.enabled and is_loopback(settings.apns.url) else 0,
                   sandbox_dir(settings.home), settings.apns.key_id, settings.apns.key_file,
                   settings.twilio_auth_token.get_secret_value())

    @property
    def control_url(self) -> str:
        return f"http://{self.host}:{self.sendgrid}"


def _port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


class Sandbox:
    def __init__(self, ports: Ports, state: SandboxState | None = None) -> None:
        self.ports = ports
        self.state = state or SandboxState()
        self.state.twilio_auth_token = ports.twilio_auth_token
        self._runner: web.AppRunner | None = None
        self._smtp: asyncio.base_events.Server | None = None
        self.apns: ApnsServer | None = None

    async def start(self) -> None:
        # handler_cancellation: a request whose client vanished (a killed worker) is not recorded as accepted
        self._runner = web.AppRunner(build_app(self.state), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        for port in {self.ports.sendgrid, self.ports.twilio, self.ports.fcm}:
            await web.TCPSite(self._runner, self.ports.host, port, reuse_address=True).start()
        loop = asyncio.get_running_loop()
        self._smtp = await loop.create_server(smtp_factory(self.state), self.ports.host, self.ports.smtp,
                                              reuse_address=True)
        if self.ports.apns:
            self.apns = ApnsServer(self.state, self.ports.host, self.ports.apns, self.ports.apns_dir, self.ports.apns_key_id,
                                   self.ports.apns_key_file)
            await self.apns.start()

    async def stop(self) -> None:
        self.state.clear_faults()
        if self.apns is not None:
            await self.apns.stop()
        if self._smtp is not None:
            self._smtp.close()
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class RunningSandbox:
    sandbox: Sandbox
    settings: Settings
    control: SandboxControl


# ports picked for servers in tests lie above the stack's fixed ones (the cluster's 19092-19394) and below the kernel's
# ephemeral range: a port the kernel hands out for bind(0) can be taken by any outgoing connection (a Kafka or
# PostgreSQL client's) between the pick and the server's own bind, which made a test fail to start its sandbox
PICKED_PORTS_FROM = 20_000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, for a server about to start (see ``PICKED_PORTS_FROM``)."""
    try:
        first_ephemeral = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 0
    for _ in range(100 if first_ephemeral > PICKED_PORTS_FROM + 1000 else 0):
        port = random.randrange(PICKED_PORTS_FROM, first_ephemeral)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:   # no such range here: the kernel's pick
        s.bind((host, 0))
        return int(s.getsockname()[1])


def with_free_ports(settings: Settings) -> Settings:
    """A copy of ``settings`` whose provider URLs and SMTP port point at free loopback ports (for tests)."""
    h = settings.sandbox_host
    return settings.model_copy(update={
        "sendgrid_host": f"http://{h}:{free_port(h)}",
        "twilio_base_url": f"http://{h}:{free_port(h)}",
        "fcm_url": f"http://{h}:{free_port(h)}",
        "smtp_port": free_port(h),
        "apns": settings.apns.model_copy(update={"url": f"https://{h}:{free_port(h)}"}),
    })


@contextmanager
def running_sandbox(settings: Settings) -> Iterator[RunningSandbox]:
    """Run the sandbox on the ports ``settings`` names, in a background thread with its own event loop."""
    sandbox = Sandbox(Ports.from_settings(settings))
    with in_thread(sandbox, "herald-sandbox"):
        yield RunningSandbox(sandbox, settings, SandboxControl(sandbox.ports.control_url))


async def serve_forever(settings: Settings) -> None:
    sandbox = Sandbox(Ports.from_settings(settings))
    await sandbox.start()
    try:
        await asyncio.Event().wait()
    finally:
        await sandbox.stop()
