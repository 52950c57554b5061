"""A real single-node Apache Kafka 4.x (KRaft) from Maven Central's jars.

No Docker engine and no Apache download site here, but Maven Central is
reachable: the jars are copied once into ``<home>/kafka/jars`` (outside the
repository) so later starts need no network.
"""
from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import time
import uuid
from importlib import resources
from pathlib import Path

from infra.settings import Settings
from infra.tools.stack.process import pid_alive, read_pid, tcp_answers, wait_until


class KafkaStack:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        host, _, port = settings.kafka_bootstrap.split(",")[0].rpartition(":")
        self.host, self.port = host or "127.0.0.1", int(port)
        self.root = settings.home / "kafka"
        self.jars = settings.home / "jars" / f"kafka-{settings.kafka_version}"
        self.data = self.root / "data"
        self.logs = self.root / "logs"
        self.pidfile = self.root / "kafka.pid"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def answers(self) -> bool:
        return tcp_answers(self.host, self.port)

    def fetch_jars(self) -> Path:
        marker = self.jars / ".complete"
        if marker.exists():
            return self.jars
        if not shutil.which("mvn"):
            raise RuntimeError("Maven (mvn) is needed once to fetch the Kafka jars: apt-get install maven")
        self.jars.mkdir(parents=True, exist_ok=True)
        pom = resources.files("infra.tools.stack") / "kafka-pom.xml"
        with resources.as_file(pom) as pom_path:
            cmd = [
                "mvn", "-q", "-B", "-f", str(pom_path),
                f"-Dkafka.version={self.s.kafka_version}",
                "dependency:copy-dependencies", f"-DoutputDirectory={self.jars}",
            ]
            done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"fetching Kafka jars failed ({' '.join(cmd)}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        marker.touch()
        return self.jars

    def _java(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["java", "-cp", f"{self.jars}/*", *args], capture_output=True, text=True, **kw
        )

    def _write_properties(self) -> Path:
        props = self.root / "server.properties"
        cport = self.port + 1
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"listeners=PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{cport}",
                    f"advertised.listeners=PLAINTEXT://{self.host}:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"controller.quorum.bootstrap.servers={self.host}:{cport}",
                    f"log.dirs={self.data}",
                    "num.partitions=1",
                    "default.replication.factor=1",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=12",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=true",
                    "log.retention.hours=168",
                    "num.network.threads=2",
                    "num.io.threads=4",
                    "",
                ]
            )
        )
        return props

    def up(self) -> str:
        if self.answers():
            return "already running"
        jars = self.fetch_jars()
        for d in (self.data, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        props = self._write_properties()
        if not (self.data / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            done = self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props), "--standalone")
            if done.returncode != 0:
                raise RuntimeError(f"formatting the Kafka log dir failed:\n{done.stdout}{done.stderr}")
        log4j = resources.files("infra.tools.stack") / "log4j2.properties"
        with resources.as_file(log4j) as log4j_path:
            cmd = [
                "java", f"-Xmx{self.s.kafka_heap}", f"-Xms{self.s.kafka_heap}", "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={log4j_path}", f"-Dkafka.logs.dir={self.logs}",
                "-cp", f"{jars}/*", "kafka.Kafka", str(props),
            ]
            with open(self.logs / "stdout.log", "ab") as out:   # the child keeps its own copy of the descriptor
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.pidfile.write_text(str(proc.pid))
        t0 = time.monotonic()
        if not wait_until(lambda: proc.poll() is not None or self._metadata_ok(), timeout=90):
            raise RuntimeError(f"Kafka did not answer within 90 s; see {self.logs}/server.log")
        if proc.poll() is not None:
            raise RuntimeError(f"Kafka exited with {proc.returncode}; see {self.logs}/stdout.log")
        return f"started in {time.monotonic() - t0:.1f}s (pid {proc.pid})"

    def _metadata_ok(self) -> bool:
        if not self.answers():
            return False
        from confluent_kafka.admin import AdminClient

        try:
            md = AdminClient({"bootstrap.servers": self.address}).list_topics(timeout=2)
            return len(md.brokers) > 0
        except Exception:  # noqa: BLE001 - not ready yet
            return False

    def down(self) -> str:
        pid = read_pid(self.pidfile)
        if pid is None or not pid_alive(pid):
            return "not running (not started by herald)" if self.answers() else "not running"
        os.kill(pid, signal.SIGTERM)
        if not wait_until(lambda: not pid_alive(pid), timeout=60):
            os.kill(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)
        return "stopped"
