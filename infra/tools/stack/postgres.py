"""PostgreSQL: the server the URL points at when it answers, else a local one from Debian's packages."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

from infra.settings import Settings
from infra.tools.stack.process import apt_install, tcp_answers


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class PostgresStack:
    def __init__(self, settings: Settings) -> None:
        url = urlparse(settings.dsn)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 5432
        self.user = url.username or "herald"
        self.dbname = (url.path or "/herald").lstrip("/") or "herald"
        # /root is not traversable by the postgres user, so root keeps the cluster elsewhere
        self.root = Path("/var/lib/herald/postgresql") if os.geteuid() == 0 else settings.home / "postgresql"
        self.data = self.root / f"data-{self.port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}/{self.dbname}"

    def answers(self) -> bool:
        return tcp_answers(self.host, self.port)

    def _run(self, *cmd: str) -> subprocess.CompletedProcess:
        if os.geteuid() == 0:
            cmd = ("runuser", "-u", "postgres", "--", *cmd)
        return subprocess.run(cmd, capture_output=True, text=True)

    def up(self) -> str:
        if self.answers():
            self._ensure_database()
            return "already running"
        bindir = _bindir()
        if bindir is None:
            apt_install("postgresql")
            bindir = _bindir()
        assert bindir is not None
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            done = self._run(str(bindir / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed:\n{done.stdout}{done.stderr}")
        # a million-user campaign writes ~3 GB of WAL: with max_wal_size 2GB a checkpoint came every ~70 s and the
        # first change of every page after it was logged whole again (PostgreSQL 85 against 72 µs per notification)
        opts = (
            f"-p {self.port} -c listen_addresses={self.host} -k /tmp "
            "-c shared_buffers=256MB -c max_connections=300 -c synchronous_commit=on "
            "-c wal_level=minimal -c max_wal_senders=0 -c max_wal_size=16GB -c checkpoint_timeout=30min"
        )
        done = self._run(str(bindir / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.data / "server.log"), "-w", "-t", "60", "start")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed:\n{done.stdout}{done.stderr}; see {self.data}/server.log")
        self._ensure_database()
        return "started"

    def _ensure_database(self) -> None:
        import psycopg

        admin = f"postgresql://{self.user}@{self.host}:{self.port}/postgres"
        try:
            with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.dbname,)).fetchone():
                    conn.execute(f'CREATE DATABASE "{self.dbname}"')
        except psycopg.OperationalError:
            pass  # a foreign server with other credentials: the database is the owner's business

    def down(self) -> str:
        bindir = _bindir()
        if bindir is None or not (self.data / "postmaster.pid").exists():
            return "not running (not started by herald)" if self.answers() else "not running"
        done = self._run(str(bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        return "stopped" if done.returncode == 0 else f"stop failed: {done.stderr.strip()}"
