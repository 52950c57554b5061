"""Redis: the server the URL points at when it answers, else redis-server from Debian's packages."""
from __future__ import annotations

import shutil
import subprocess
from urllib.parse import urlparse

from infra.settings import Settings
from infra.tools.stack.process import apt_install, pid_alive, read_pid, tcp_answers, wait_until


class RedisStack:
    def __init__(self, settings: Settings) -> None:
        url = urlparse(settings.redis_dsn)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 6379
        self.root = settings.home / "redis"
        self.pidfile = self.root / f"redis-{self.port}.pid"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def answers(self) -> bool:
        return tcp_answers(self.host, self.port)

    def up(self) -> str:
        if self.answers():
            return "already running"
        if not shutil.which("redis-server"):
            apt_install("redis-server")
        self.root.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [
                "redis-server", "--port", str(self.port), "--bind", self.host, "--daemonize", "yes",
                "--pidfile", str(self.pidfile), "--dir", str(self.root),
                "--logfile", str(self.root / f"redis-{self.port}.log"), "--save", "", "--appendonly", "no",
            ],
            capture_output=True, text=True,
        )
        if done.returncode != 0 or not wait_until(self.answers, timeout=10):
            raise RuntimeError(f"redis-server did not start: {done.stderr}; see {self.root}")
        return "started"

    def down(self) -> str:
        pid = read_pid(self.pidfile)
        if pid is None or not pid_alive(pid):
            return "not running (not started by herald)" if self.answers() else "not running"
        subprocess.run(["redis-cli", "-h", self.host, "-p", str(self.port), "shutdown", "nosave"], capture_output=True)
        wait_until(lambda: not pid_alive(pid), timeout=10)
        return "stopped"
