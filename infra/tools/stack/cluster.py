"""A local N-broker Apache Kafka cluster (KRaft, combined broker+controller nodes) beside the single node.

``herald stack up --brokers 3 [--security sasl_ssl]`` starts it from the same cached jars: node ``i`` listens
on ``cluster.port + i`` (PLAINTEXT, also between the brokers), ``cluster.port + 100 + i`` (its controller) and,
with ``sasl_ssl``, ``cluster.port + 300 + i`` (SASL_SSL, SCRAM-SHA-512, a certificate signed by a CA made here
with openssl). Everything lives under ``<home>/cluster``, never in the repository: one data dir and log per
node, the TLS files, the SCRAM password (mode 600) and ``cluster.json``, the state a client reads to connect
(``HERALD_KAFKA_*`` variables, see :meth:`KafkaCluster.client_env`).
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Literal

from infra.settings import Settings
from infra.tools.stack.kafka import KafkaStack
from infra.tools.stack.process import pid_alive, read_pid, tcp_answers, wait_until

Security = Literal["plaintext", "sasl_ssl"]
HOST = "127.0.0.1"
MECHANISM = "SCRAM-SHA-512"
START_TIMEOUT = 120.0


class ClusterNode:
    def __init__(self, cluster: KafkaCluster, index: int) -> None:
        self.c, self.index, self.node_id = cluster, index, index + 1
        base = cluster.s.cluster.port
        self.port, self.controller_port, self.sasl_port = base + index, base + 100 + index, base + 300 + index
        self.dir = cluster.root / f"node-{self.node_id}"
        self.data, self.logs = self.dir / "data", self.dir / "logs"
        self.props = self.dir / "server.properties"
        self.pidfile = self.dir / "kafka.pid"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        pid = read_pid(self.pidfile)
        return pid if pid is not None and pid_alive(pid) else None

    def answers(self) -> bool:
        return tcp_answers(HOST, self.port)

    def write_properties(self, security: Security) -> None:
        c = self.c
        n = c.brokers
        rf, isr = min(3, n), (2 if n >= 3 else 1)
        listeners = [f"PLAINTEXT://{HOST}:{self.port}", f"CONTROLLER://{HOST}:{self.controller_port}"]
        advertised = [f"PLAINTEXT://{HOST}:{self.port}"]
        protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
        lines = []
        if security == "sasl_ssl":
            listeners.append(f"SASL_SSL://{HOST}:{self.sasl_port}")
            advertised.append(f"SASL_SSL://{HOST}:{self.sasl_port}")
            protocols += ",SASL_SSL:SASL_SSL"
            store_password = c.keystore_password.read_text().strip()
            lines += [
                f"listener.name.sasl_ssl.sasl.enabled.mechanisms={MECHANISM}",
                f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                f"listener.name.sasl_ssl.ssl.keystore.location={c.keystore}",
                "listener.name.sasl_ssl.ssl.keystore.type=PKCS12",
                f"listener.name.sasl_ssl.ssl.keystore.password={store_password}",
                f"listener.name.sasl_ssl.ssl.key.password={store_password}",
            ]
        voters = ",".join(f"{m.node_id}@{HOST}:{m.controller_port}" for m in c.nodes)
        lines += [
            "process.roles=broker,controller",
            f"node.id={self.node_id}",
            f"listeners={','.join(listeners)}",
            f"advertised.listeners={','.join(advertised)}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            f"listener.security.protocol.map={protocols}",
            f"controller.quorum.voters={voters}",
            f"log.dirs={self.data}",
            "num.partitions=1",
            f"default.replication.factor={rf}",
            f"min.insync.replicas={isr}",
            f"offsets.topic.replication.factor={rf}",
            "offsets.topic.num.partitions=12",
            f"transaction.state.log.replication.factor={rf}",
            f"transaction.state.log.min.isr={isr}",
            f"share.coordinator.state.topic.replication.factor={rf}",
            f"share.coordinator.state.topic.min.isr={isr}",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "unclean.leader.election.enable=false",
            "replica.lag.time.max.ms=10000",
            "log.retention.hours=168",
            "num.network.threads=2",
            "num.io.threads=2",
            "num.replica.fetchers=1",
            "",
        ]
        self.props.write_text("\n".join(lines))

    def format(self, cluster_id: str) -> None:
        if (self.data / "meta.properties").exists():
            return
        done = self.c.single._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.props))
        if done.returncode != 0:
            raise RuntimeError(f"formatting node {self.node_id} failed:\n{done.stdout}{done.stderr}")

    def start(self) -> int:
        """Start this node's JVM (its data and properties must exist); returns the pid."""
        if (pid := self.pid) is not None:
            return pid
        s = self.c.s
        log4j = resources.files("infra.tools.stack") / "log4j2.properties"
        with resources.as_file(log4j) as log4j_path:
            cmd = [
                "java", f"-Xmx{s.cluster.heap}", f"-Xms{s.cluster.heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-XX:ActiveProcessorCount=2", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={log4j_path}", f"-Dkafka.logs.dir={self.logs}",
                "-cp", f"{self.c.single.jars}/*", "kafka.Kafka", str(self.props),
            ]
            with open(self.logs / "stdout.log", "ab") as out:
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.pidfile.write_text(str(proc.pid))
        return proc.pid

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """SIGKILL (a crash: no controlled shutdown) or SIGTERM; waits until the process is gone."""
        pid = self.pid
        if pid is None:
            return
        os.kill(pid, sig)
        if not wait_until(lambda: not pid_alive(pid), timeout=60 if sig != signal.SIGKILL else 10):
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not pid_alive(pid), timeout=10)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)   # reap it when it is our child (a test's restart)


class KafkaCluster:
    def __init__(self, settings: Settings, brokers: int | None = None) -> None:
        self.s = settings
        self.single = KafkaStack(settings)   # the jar cache and the java helper
        self.root = settings.home / "cluster"
        self.state_file = self.root / "cluster.json"
        state = self.state()
        self.brokers = brokers or (state or {}).get("brokers", 3)
        self.nodes = [ClusterNode(self, i) for i in range(self.brokers)]
        self.tls = self.root / "tls"
        self.ca_file, self.keystore = self.tls / "ca.pem", self.tls / "broker.p12"
        self.keystore_password = self.tls / "keystore.password"
        self.password_file = self.root / "secrets" / f"{settings.cluster.user}.password"

    # --- state ----------------------------------------------------------------
    def state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.nodes)

    @property
    def sasl_bootstrap(self) -> str:
        return ",".join(f"{HOST}:{n.sasl_port}" for n in self.nodes)

    def client_env(self, security: Security) -> dict[str, str]:
        """The HERALD_KAFKA_* variables a client needs to reach this cluster."""
        if security == "plaintext":
            return {"HERALD_KAFKA_BOOTSTRAP": self.bootstrap, "HERALD_KAFKA__SECURITY_PROTOCOL": "PLAINTEXT"}
        return {
            "HERALD_KAFKA_BOOTSTRAP": self.sasl_bootstrap,
            "HERALD_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "HERALD_KAFKA__SASL_MECHANISM": MECHANISM,
            "HERALD_KAFKA__SASL_USERNAME": self.s.cluster.user,
            "HERALD_KAFKA__SASL_PASSWORD_FILE": str(self.password_file),
            "HERALD_KAFKA__SSL_CA_FILE": str(self.ca_file),
        }

    def answers(self) -> bool:
        return all(n.answers() for n in self.nodes)

    # --- TLS and SCRAM material -------------------------------------------------
    def _openssl(self, *args: str) -> None:
        done = subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=self.tls)
        if done.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()[-500:]}")

    def make_tls(self) -> None:
        """A CA and one broker certificate (SAN 127.0.0.1 and localhost) in a PKCS12 keystore, made once."""
        if self.keystore.exists() and self.ca_file.exists():
            return
        self.tls.mkdir(parents=True, exist_ok=True)
        os.chmod(self.tls, 0o700)
        password = secrets.token_urlsafe(18)
        self.keystore_password.write_text(password + "\n")
        os.chmod(self.keystore_password, 0o600)
        self._openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
                      "-days", "3650", "-subj", "/CN=Herald local cluster CA",
                      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self._openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
                      "-subj", "/CN=localhost")
        (self.tls / "broker.ext").write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
            "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
        self._openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                      "-out", "broker.pem", "-days", "825", "-sha256", "-extfile", "broker.ext")
        self._openssl("pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
                      "-name", "broker", "-out", "broker.p12", "-passout", f"pass:{password}")
        for name in ("ca.key", "broker.key", "broker.p12"):
            os.chmod(self.tls / name, 0o600)

    def make_password(self) -> str:
        if not self.password_file.exists():
            self.password_file.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(self.password_file.parent, 0o700)
            self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
            os.chmod(self.password_file, 0o600)
        return self.password_file.read_text().strip()

    # --- admin over the PLAINTEXT listener (loopback only) -------------------------
    def _admin(self):
        from confluent_kafka.admin import AdminClient

        from infra.tools.cli.kafka import quiet_logger

        return AdminClient({"bootstrap.servers": self.bootstrap, "logger": quiet_logger(),
                            "socket.connection.setup.timeout.ms": 3000})

    def _brokers_in_metadata(self) -> int:
        try:
            return len(self._admin().list_topics(timeout=3).brokers)
        except Exception:  # noqa: BLE001 - not ready yet
            return 0

    def _probe_topic(self) -> bool:
        """A topic with the cluster's full replication can be created (every broker takes replicas)."""
        from confluent_kafka.admin import NewTopic

        admin = self._admin()
        name = f"__herald_probe_{uuid.uuid4().hex[:8]}"
        try:
            admin.create_topics([NewTopic(name, 1, min(3, self.brokers))], operation_timeout=10)[name].result(15)
            admin.delete_topics([name], operation_timeout=10)[name].result(15)
            return True
        except Exception:  # noqa: BLE001 - not all brokers registered yet
            return False

    def _upsert_user(self, password: str) -> None:
        from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
        upsert = UserScramCredentialUpsertion(self.s.cluster.user, info, password.encode())
        admin = self._admin()   # held: a collected client cancels its futures
        for fut in admin.alter_user_scram_credentials([upsert], request_timeout=15).values():
            fut.result(20)

    def _sasl_works(self) -> bool:
        from confluent_kafka.admin import AdminClient

        from infra.kafka.config import admin_config
        from infra.tools.cli.kafka import quiet_logger

        settings = self.client_settings("sasl_ssl")
        try:
            for n in self.nodes:   # each broker's SASL_SSL listener, with the CA and the SCRAM user
                conf = admin_config(settings.model_copy(update={"kafka_bootstrap": f"{HOST}:{n.sasl_port}"}),
                                    logger=quiet_logger())
                if len(AdminClient(conf).list_topics(timeout=5).brokers) != self.brokers:
                    return False
            return True
        except Exception:  # noqa: BLE001 - credentials not propagated yet
            return False

    def client_settings(self, security: Security | None = None) -> Settings:
        """``self.s`` pointing at this cluster (its SASL_SSL listener when it has one)."""
        security = security or (self.state() or {}).get("security", "plaintext")
        env = self.client_env(security)
        kafka = self.s.kafka.model_copy(update={
            "security_protocol": env["HERALD_KAFKA__SECURITY_PROTOCOL"],
            "sasl_mechanism": env.get("HERALD_KAFKA__SASL_MECHANISM", self.s.kafka.sasl_mechanism),
            "sasl_username": env.get("HERALD_KAFKA__SASL_USERNAME"),
            "sasl_password": None,
            "sasl_password_file": Path(env["HERALD_KAFKA__SASL_PASSWORD_FILE"]) if security == "sasl_ssl" else None,
            "ssl_ca_file": self.ca_file if security == "sasl_ssl" else None,
        })
        return self.s.model_copy(update={"kafka_bootstrap": env["HERALD_KAFKA_BOOTSTRAP"], "kafka": kafka})

    # --- life cycle --------------------------------------------------------------
    def up(self, security: Security = "plaintext") -> str:
        """Start the nodes that are not running (formatting new ones), wait for the whole cluster; idempotent."""
        state = self.state()
        if state and state.get("brokers") != self.brokers and any(n.pid for n in self.nodes):
            raise RuntimeError(f"a {state['brokers']}-broker cluster runs; stop it first (`herald stack down --cluster`)")
        running = state is not None and state.get("security") == security and all(n.pid for n in self.nodes)
        if running and self.answers():
            return "already running"
        if state and state.get("security") != security and any(n.pid for n in self.nodes):
            self.down()   # a listener more or less: the nodes restart with their data
        t0 = time.monotonic()
        self.single.fetch_jars()
        password = self.make_password() if security == "sasl_ssl" else None
        if security == "sasl_ssl":
            self.make_tls()
        cluster_id = (state or {}).get("cluster_id") or self._existing_cluster_id() or \
            base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        for n in self.nodes:
            n.data.mkdir(parents=True, exist_ok=True)
            n.logs.mkdir(parents=True, exist_ok=True)
            n.write_properties(security)
        with ThreadPoolExecutor(len(self.nodes)) as pool:   # the formats are JVM starts: in parallel
            list(pool.map(lambda n: n.format(cluster_id), self.nodes))
        pids = [n.start() for n in self.nodes]
        if not wait_until(lambda: self._brokers_in_metadata() == self.brokers, timeout=START_TIMEOUT, interval=0.3):
            raise RuntimeError(f"the {self.brokers} brokers did not all register within {START_TIMEOUT:g} s; "
                               f"see {self.root}/node-*/logs/server.log")
        if not wait_until(self._probe_topic, timeout=60, interval=0.5):
            raise RuntimeError(f"no topic with replication factor {min(3, self.brokers)} could be created; see {self.root}")
        if password is not None:
            self._upsert_user(password)
            if not wait_until(self._sasl_works, timeout=30, interval=0.3):
                raise RuntimeError(f"the SASL_SSL listeners do not accept {self.s.cluster.user}; see {self.root}/node-*/logs")
        self.state_file.write_text(json.dumps({
            "brokers": self.brokers, "cluster_id": cluster_id, "security": security, "bootstrap": self.bootstrap,
            "env": self.client_env(security), "pids": pids,
        }, indent=2) + "\n")
        return f"{self.brokers} brokers started in {time.monotonic() - t0:.1f}s"

    def _existing_cluster_id(self) -> str | None:
        for n in self.nodes:
            try:
                for line in (n.data / "meta.properties").read_text().splitlines():
                    if line.startswith("cluster.id="):
                        return line.split("=", 1)[1].strip()
            except OSError:
                continue
        return None

    def down(self) -> str:
        running = [n for n in self.nodes if n.pid is not None]
        if not running:
            self.state_file.unlink(missing_ok=True)
            return "not running"
        with ThreadPoolExecutor(len(running)) as pool:
            list(pool.map(lambda n: n.kill(signal.SIGTERM), running))
        for n in self.nodes:
            n.pidfile.unlink(missing_ok=True)
        self.state_file.unlink(missing_ok=True)
        return f"stopped {len(running)} brokers"
