"""Settings come from HERALD_* variables with secrets masked; the CLI explains itself and fails without tracebacks."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from infra.kafka.config import consumer_config
from infra.settings import Settings, tier_name
from infra.topics import topic_specs


def test_settings_read_herald_variables(monkeypatch):
    monkeypatch.setenv("HERALD_KAFKA_BOOTSTRAP", "10.0.0.1:9092")
    monkeypatch.setenv("HERALD_PARTITIONS", "24")
    monkeypatch.setenv("HERALD_RETRY_DELAYS", "[1, 2]")
    s = Settings()
    assert (s.kafka_bootstrap, s.partitions, s.retry_delays) == ("10.0.0.1:9092", 24, [1.0, 2.0])
    assert s.retry_topics == ["herald.retry.1s", "herald.retry.2s"]


def test_a_consumers_prefetch_is_bounded_by_one_setting(monkeypatch):
    # what a worker holds while a backlog waits: both librdkafka bounds, the queue and one fetch's response
    assert {k: consumer_config(Settings(), "g")[k] for k in ("queued.max.messages.kbytes", "fetch.max.bytes")} == {
        "queued.max.messages.kbytes": 8192, "fetch.max.bytes": 8192 * 1024}
    monkeypatch.setenv("HERALD_KAFKA__CONSUMER_PREFETCH_KBYTES", "2048")
    assert consumer_config(Settings(), "g")["fetch.max.bytes"] == 2048 * 1024
    monkeypatch.setenv("HERALD_KAFKA__CONSUMER_PREFETCH_KBYTES", "100")
    with pytest.raises(ValidationError, match="consumer_prefetch_kbytes"):
        Settings()


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


def test_secrets_are_read_from_files(monkeypatch, tmp_path: Path):
    (tmp_path / "sg").write_text("SG.from-a-file\n")
    (tmp_path / "db").write_text("postgresql://app:pw@db:5432/herald")
    (tmp_path / "registry").write_text("registry-secret")
    monkeypatch.setenv("HERALD_SENDGRID_API_KEY_FILE", str(tmp_path / "sg"))
    monkeypatch.setenv("HERALD_DATABASE_URL_FILE", str(tmp_path / "db"))
    monkeypatch.setenv("HERALD_SCHEMA_REGISTRY__PASSWORD_FILE", str(tmp_path / "registry"))
    monkeypatch.setenv("HERALD_SCHEMA_REGISTRY__USERNAME", "reg-user")
    s = Settings()
    assert s.sendgrid_api_key.get_secret_value() == "SG.from-a-file"
    assert s.dsn == "postgresql://app:pw@db:5432/herald"
    assert s.schema_registry.password is not None and s.schema_registry.password.get_secret_value() == "registry-secret"
    assert s.schema_registry.username == "reg-user"
    # a child process gets the values in clear and the same _FILE variables: no conflict
    monkeypatch.setenv("HERALD_SENDGRID_API_KEY", s.to_env()["HERALD_SENDGRID_API_KEY"])
    assert Settings().sendgrid_api_key.get_secret_value() == "SG.from-a-file"
    # two different values, or a file that is not there, are refused naming the variables
    monkeypatch.setenv("HERALD_SENDGRID_API_KEY", "SG.other")
    with pytest.raises(ValidationError, match="set HERALD_SENDGRID_API_KEY or HERALD_SENDGRID_API_KEY_FILE, not both"):
        Settings()
    monkeypatch.delenv("HERALD_SENDGRID_API_KEY")
    monkeypatch.setenv("HERALD_TWILIO_AUTH_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValidationError, match="HERALD_TWILIO_AUTH_TOKEN_FILE: cannot read"):
        Settings()


@pytest.mark.parametrize("env,needle", [
    ({"HERALD_EMAIL_PROVIDER": "sendgrid", "HERALD_SENDGRID_HOST": "https://api.sendgrid.com"}, "set HERALD_SENDGRID_API_KEY"),
    ({"HERALD_TWILIO_BASE_URL": "https://api.twilio.com", "HERALD_TWILIO_ACCOUNT_SID": "AC123"}, "set HERALD_TWILIO_AUTH_TOKEN"),
    ({"HERALD_TWILIO_BASE_URL": "https://api.twilio.com", "HERALD_TWILIO_AUTH_TOKEN": "real"}, "set HERALD_TWILIO_ACCOUNT_SID"),
    ({"HERALD_API__PUBLIC_URL": "https://herald.example.com"}, "anyone could forge them"),
    ({"HERALD_FCM_URL": "https://fcm.googleapis.com"}, "set HERALD_FCM_CREDENTIALS_FILE"),
    ({"HERALD_APNS__URL": "https://api.push.apple.com"}, "set HERALD_APNS__KEY_FILE"),
])
def test_the_sandbox_credentials_are_refused_for_a_provider_beyond_loopback(monkeypatch, env, needle):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValidationError, match="refusing to start with the sandbox's credentials") as exc:
        Settings()
    assert needle in str(exc.value)


def test_real_credentials_or_a_local_provider_start(monkeypatch, tmp_path: Path):
    for url in ("http://127.0.0.1:8026", "http://localhost:8026", "http://[::1]:8026"):
        monkeypatch.setenv("HERALD_TWILIO_BASE_URL", url)
        Settings()  # the sandbox, with its own credentials
    monkeypatch.setenv("HERALD_SANDBOX_HOST", "sandbox")
    monkeypatch.setenv("HERALD_TWILIO_BASE_URL", "http://sandbox:8026")  # the sandbox in a container network
    Settings()
    (tmp_path / "token").write_text("real-token")
    monkeypatch.setenv("HERALD_TWILIO_BASE_URL", "https://api.twilio.com")
    monkeypatch.setenv("HERALD_TWILIO_ACCOUNT_SID", "AC123")
    monkeypatch.setenv("HERALD_TWILIO_AUTH_TOKEN_FILE", str(tmp_path / "token"))
    assert Settings().twilio_auth_token.get_secret_value() == "real-token"
    monkeypatch.setenv("HERALD_EMAIL_PROVIDER", "smtp")
    monkeypatch.setenv("HERALD_SENDGRID_HOST", "https://api.sendgrid.com")  # not the email provider: its key is never used
    Settings()


def test_the_cli_refuses_sandbox_credentials_in_one_line():
    import os

    done = _herald("config", env={**os.environ, "HERALD_FCM_URL": "https://fcm.googleapis.com"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "refusing to start with the sandbox's credentials" in done.stderr and "HERALD_FCM_CREDENTIALS_FILE" in done.stderr


def test_the_critical_deliver_topics_exist_one_per_channel_beside_the_interactive_and_bulk_ones():
    specs = {s.name: s.partitions for s in topic_specs(Settings())}
    assert specs["herald.deliver.email.critical"] == specs["herald.deliver.sms.critical"] == 3   # low volume: small
    assert "herald.deliver.push.critical" in specs


def test_herald_api_runs_as_many_uvicorn_processes_as_the_setting_says_and_the_cores_by_default(monkeypatch):
    import os

    import uvicorn
    from typer.testing import CliRunner

    from infra.tools.cli.main import app

    assert Settings().api.workers == len(os.sched_getaffinity(0))
    ran: list[int] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: ran.append(kw["workers"]))
    monkeypatch.setenv("HERALD_API__WORKERS", "3")
    assert CliRunner().invoke(app, ["api"]).exit_code == 0
    assert CliRunner().invoke(app, ["api", "--workers", "2"]).exit_code == 0   # the option wins
    assert ran == [3, 2]
    monkeypatch.setenv("HERALD_API__WORKERS", "0")
    with pytest.raises(ValidationError, match="workers"):
        Settings()
