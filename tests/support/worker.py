"""Run ``herald worker`` as a subprocess (so a test can SIGKILL it) and wait for it to consume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from infra.settings import Settings
from tests.support.env import settings_env


class WorkerProcess:
    def __init__(self, settings: Settings, agents: list[str] | None, log_path: Path, extra_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.agents = agents or []
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {**os.environ, **settings_env(self.settings), **self.extra_env, "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "infra.tools.cli.main", "worker", "--loglevel", "info"]
        for a in self.agents:
            cmd += ["--agent", a]
        if self._log is not None:   # started again (a test standing in for an orchestrator's restart)
            self._log.close()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - open while the process lives; closed in stop()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no commit."""
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 60) -> tuple[int | None, float]:
        """SIGTERM (what an orchestrator sends): (exit code, seconds to exit); (None, timeout) if it had to be killed."""
        assert self.proc is not None
        t0 = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None, timeout
        return rc, time.monotonic() - t0

    def stop(self, timeout: float = 30) -> None:
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 90) -> WorkerProcess:
        """Until Faust says the worker is up (its start, during which a broker crash still stops it, is over)."""
        wait_for(lambda: "[^Worker]: Ready" in self.log_text() or not self.alive(), timeout, interval=0.2,
                 message="the worker to be ready")
        assert self.alive(), f"the worker exited while starting: {self.log_text()[-2000:]}"
        return self


def wait_for(check, timeout: float, interval: float = 0.1, message: str = "condition"):
    """Poll ``check`` until it returns a truthy value (returned) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)
