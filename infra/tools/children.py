"""Herald processes started by another one (the demo, the benchmarks): ``herald <args>`` in its own session."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Run ``herald *args`` with ``env``, output appended to ``log``; its own process group, so stop() reaches its children."""
    return subprocess.Popen([sys.executable, "-m", "infra.tools.cli.main", *args], env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM (a clean stop: Faust leaves the group, the scheduler finishes its batch), SIGKILL after ``timeout``."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
