"""Compile and run the small Java producer of tests/support/java against cached Maven Central jars.

kafka-clients comes from the Kafka jars `herald stack up` caches; Apache Avro is copied once with Maven
(tests/support/java/avro-pom.xml) into ``~/.cache/herald/jars/avro-<version>``, so a second run needs no network.
Classes are compiled into a temporary folder, never into the repository.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from infra.settings import Settings

HERE = Path(__file__).resolve().parent / "java"
AVRO_VERSION = "1.12.0"


def avro_jars(settings: Settings) -> Path:
    jars = settings.home / "jars" / f"avro-{AVRO_VERSION}"
    marker = jars / ".complete"
    if marker.exists():
        return jars
    assert shutil.which("mvn"), "Maven (mvn) is needed once to fetch Apache Avro's jars"
    jars.mkdir(parents=True, exist_ok=True)
    cmd = ["mvn", "-q", "-B", "-f", str(HERE / "avro-pom.xml"), f"-Davro.version={AVRO_VERSION}",
           "dependency:copy-dependencies", f"-DoutputDirectory={jars}",
           "-DexcludeGroupIds=com.fasterxml.jackson.core,org.slf4j"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"fetching Avro's jars failed ({' '.join(cmd)}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    marker.touch()
    return jars


def classpath(settings: Settings) -> str:
    kafka = settings.home / "jars" / f"kafka-{settings.kafka_version}"
    assert (kafka / ".complete").exists() or any(kafka.glob("kafka-clients-*.jar")), f"no Kafka jars in {kafka}: `herald stack up`"
    return f"{kafka}/*:{avro_jars(settings)}/*"


def compile_program(settings: Settings, name: str, out: Path) -> str:
    """javac ``tests/support/java/<name>.java`` into ``out``; returns the classpath to run it with."""
    cp = classpath(settings)
    done = subprocess.run(["javac", "-d", str(out), "-cp", cp, str(HERE / f"{name}.java")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"javac failed:\n{done.stderr[-3000:]}"
    return f"{out}:{cp}"


def run_program(cp: str, name: str, *args: str) -> str:
    done = subprocess.run(["java", "-cp", cp, name, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"java {name} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done.stdout
