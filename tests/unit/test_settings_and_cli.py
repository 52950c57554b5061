"""Settings come from HERALD_* variables with secrets masked; the CLI explains itself and fails without tracebacks."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from infra.settings import Settings, tier_name
from infra.topics import topic_specs


def test_settings_read_herald_variables(monkeypatch):
    monkeypatch.setenv("HERALD_KAFKA_BOOTSTRAP", "10.0.0.1:9092")
    monkeypatch.setenv("HERALD_PARTITIONS", "24")
    monkeypatch.setenv("HERALD_RETRY_DELAYS", "[1, 2]")
    s = Settings()
    assert (s.kafka_bootstrap, s.partitions, s.retry_delays) == ("10.0.0.1:9092", 24, [1.0, 2.0])
    assert s.retry_topics == ["herald.retry.1s", "herald.retry.2s"]


def test_defaults_point_at_the_local_stack():
    s = Settings()
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.redis_dsn == "redis://127.0.0.1:6379/0"
    assert s.retry_topics == ["herald.retry.1m", "herald.retry.5m", "herald.retry.15m"]


def test_secrets_are_masked_when_printed(monkeypatch):
    monkeypatch.setenv("HERALD_DATABASE_URL", "postgresql://app:hunter2@db:5432/herald")
    monkeypatch.setenv("HERALD_SENDGRID_API_KEY", "SG.very-secret")
    s = Settings()
    shown = s.masked()
    assert shown["database_url"] == "postgresql://app:****@db:5432/herald"
    assert shown["sendgrid_api_key"] == "**********"
    assert "hunter2" not in repr(s) and "very-secret" not in repr(s)
    assert s.dsn.endswith("hunter2@db:5432/herald")


@pytest.mark.parametrize("value", ["[]", "[0]", "[-5, 60]"])
def test_a_bad_retry_ladder_is_refused(monkeypatch, value):
    monkeypatch.setenv("HERALD_RETRY_DELAYS", value)
    with pytest.raises(ValidationError, match="retry_delays"):
        Settings()


@pytest.mark.parametrize("seconds,name", [(60, "1m"), (300, "5m"), (900, "15m"), (2, "2s"), (0.5, "0_5s")])
def test_tier_names(seconds, name):
    assert tier_name(seconds) == name


def _herald(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infra.tools.cli.main", *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("group", ["stack", "db", "schemas", "worker", "config"])
def test_every_command_explains_itself(group):
    done = _herald(group, "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout and len(done.stdout) > 200


def test_schemas_check_reports_an_incompatible_version_without_a_traceback(tmp_path: Path):
    base = {"type": "record", "name": "Thing", "fields": [{"name": "a", "type": "string"}]}
    (tmp_path / "Thing.v1.avsc").write_text(json.dumps(base))
    (tmp_path / "Thing.v2.avsc").write_text(json.dumps({**base, "fields": [{"name": "a", "type": "int"}]}))
    done = _herald("schemas", "check", "--root", str(tmp_path))
    assert done.returncode == 1
    assert "type_mismatch at a" in done.stdout and "int not compatible" in done.stdout
    assert "not backward compatible" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_an_invalid_setting_is_a_clear_cli_error():
    import os

    done = _herald("config", env={**os.environ, "HERALD_PARTITIONS": "many"})
    assert done.returncode == 2
    assert "invalid HERALD_* setting" in done.stderr and "HERALD_PARTITIONS" in done.stderr and "'many'" in done.stderr
    assert "Traceback" not in done.stderr


def test_default_partitions_are_12_for_events_and_deliver_topics():
    specs = {s.name: s.partitions for s in topic_specs(Settings())}
    assert specs["herald.events"] == specs["herald.bulk"] == specs["herald.deliver.email"] == 12
    assert specs["herald.deliver.push.bulk"] == 12


def test_nested_secrets_reach_a_child_process_in_clear_and_empty_file_settings_are_unset(monkeypatch):
    """A worker started by `herald demo` or a test gets the SASL password itself, not its mask."""
    s = Settings(kafka={"security_protocol": "SASL_SSL", "sasl_username": "u", "sasl_password": "s3cret"})
    for name, value in s.to_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HERALD_KAFKA__SASL_PASSWORD_FILE", "")
    child = Settings()
    assert child.kafka.password() == "s3cret" and child.kafka.sasl_password_file is None
    assert "s3cret" not in str(child.masked())
