"""The CLI's promise: an expected failure is one line saying what to do (no traceback, exit status ≠ 0).

The "service down" cases point at 127.0.0.1:1, where nothing listens.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

NOTHING_LISTENS = "127.0.0.1:1"


def herald(*args: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "COLUMNS": "80", **env}
    return subprocess.run([sys.executable, "-m", "infra.tools.cli.main", *args], capture_output=True, text=True, env=full,
                          timeout=90)


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_version():
    done = herald("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == "herald 0.1.0"


def test_db_migrate_without_postgresql_is_one_line():
    line = one_line_error(herald("db", "migrate", HERALD_DATABASE_URL=f"postgresql://{NOTHING_LISTENS}/herald"))
    assert "PostgreSQL does not answer" in line and "herald stack up" in line


@pytest.mark.parametrize("command", [("config",), ("schemas", "list"), ("dlq", "list"), ("db", "migrate"), ("worker",),
                                     ("api",), ("scheduler",), ("stack", "status")])
def test_a_list_setting_that_is_not_json_names_the_variable_for_every_command(command: tuple[str, ...]):
    line = one_line_error(herald(*command, HERALD_RETRY_DELAYS="60,300"))
    assert "HERALD_RETRY_DELAYS" in line and "JSON list" in line and "[60.0, 300.0, 900.0]" in line


def test_a_bad_section_value_names_the_nested_variable():
    line = one_line_error(herald("config", HERALD_API__RATE_LIMIT="0"))
    assert "HERALD_API__RATE_LIMIT" in line and "greater than or equal to 1" in line
    line = one_line_error(herald("config", HERALD_API="{not json"))
    assert "HERALD_API:" in line and "JSON object" in line


def test_help_still_works_with_a_bad_setting():
    done = herald("schemas", "list", "--help", HERALD_PARTITIONS="many")
    assert done.returncode == 0 and "Usage" in done.stdout


@pytest.mark.parametrize("command", ["list", "check"])
def test_an_avsc_file_with_bad_json_is_one_line_naming_the_file(tmp_path: Path, command: str):
    (tmp_path / "Thing.v1.avsc").write_text('{"type": "record", "name": ')
    line = one_line_error(herald("schemas", command, "--root", str(tmp_path)))
    assert "Thing.v1.avsc" in line and "not a valid Avro schema" in line


@pytest.mark.parametrize("command", ["list", "check"])
def test_schemas_root_that_does_not_exist_is_an_error(tmp_path: Path, command: str):
    line = one_line_error(herald("schemas", command, "--root", str(tmp_path / "nowhere")))
    assert "no such folder" in line
    line = one_line_error(herald("schemas", command, "--root", str(tmp_path)))
    assert "no .avsc files" in line


def test_schemas_list_json_is_one_object_per_version():
    done = herald("schemas", "list", "--json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert {"name": "OrderPlaced", "version": 1} in [{"name": r["name"], "version": r["version"]} for r in rows]
    assert all(len(r["fingerprint"]) == 16 and r["file"].endswith(".avsc") for r in rows)


@pytest.mark.parametrize("command", [("dlq", "list"), ("dlq", "stats"), ("dlq", "show", "0:1"), ("dlq", "replay", "--dry-run"),
                                     ("campaign", "send", "-t", "promo", "--users", "USERS"), ("tail", "events")])
def test_kafka_commands_without_a_broker_fail_fast_in_one_line(command: tuple[str, ...], tmp_path: Path):
    users = tmp_path / "users.txt"
    users.write_text("u1\nu2\n")
    t0 = time.monotonic()
    done = herald(*(str(users) if a == "USERS" else a for a in command), HERALD_KAFKA_BOOTSTRAP=NOTHING_LISTENS,
                  HERALD_DATABASE_URL=f"postgresql://{NOTHING_LISTENS}/herald")
    took = time.monotonic() - t0
    line = one_line_error(done)   # and none of librdkafka's own "Connect to ... failed" lines
    assert "no Kafka broker answers at 127.0.0.1:1" in line and "herald stack up" in line
    assert "rdkafka" not in done.stdout + done.stderr
    assert took < 15, f"took {took:.1f} s"


def test_a_postgresql_outage_no_command_expected_is_still_one_line(monkeypatch, capsys):
    import psycopg

    from infra.tools.cli import main as cli

    def outage() -> None:
        raise psycopg.OperationalError("connection failed: server closed the connection\n\tunexpectedly")

    monkeypatch.setattr(cli, "app", outage)
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "PostgreSQL does not answer" in lines[0] and "unexpectedly" in lines[0]


def test_schemas_check_refuses_a_renamed_nested_record_without_an_alias(tmp_path: Path):
    """The hand-written checker passed this; Apache Avro (and so every old event at decode time) refuses it."""
    address = {"type": "record", "name": "Address", "fields": [{"name": "city", "type": "string"}]}
    v1 = {"type": "record", "name": "Thing", "namespace": "shop", "fields": [{"name": "a", "type": address}]}
    v2 = {**v1, "fields": [{"name": "a", "type": {**address, "name": "PostalAddress"}}]}
    (tmp_path / "Thing.v1.avsc").write_text(json.dumps(v1))
    (tmp_path / "Thing.v2.avsc").write_text(json.dumps(v2))
    done = herald("schemas", "check", "--root", str(tmp_path))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "name_mismatch" in done.stdout and "shop.Address" in done.stdout
    (tmp_path / "Thing.v2.avsc").write_text(json.dumps({**v1, "fields": [{"name": "a", "type": {
        **address, "name": "PostalAddress", "aliases": ["Address"]}}]}))
    done = herald("schemas", "check", "--root", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_schemas_commands_include_herald_schemas_dir(tmp_path: Path):
    thing = {"type": "record", "name": "InvoicePaid", "namespace": "billing", "fields": [{"name": "user_id", "type": "string"}]}
    (tmp_path / "InvoicePaid.v1.avsc").write_text(json.dumps(thing))
    (tmp_path / "InvoicePaid.v2.avsc").write_text(json.dumps({**thing, "fields": [{"name": "user_id", "type": "int"}]}))
    done = herald("schemas", "list", "--json", HERALD_SCHEMAS_DIR=str(tmp_path))
    names = {(r["name"], r["version"]) for r in map(json.loads, done.stdout.splitlines())}
    assert {("InvoicePaid", 1), ("InvoicePaid", 2), ("OrderPlaced", 1)} <= names
    done = herald("schemas", "check", HERALD_SCHEMAS_DIR=str(tmp_path))
    assert done.returncode == 1 and "InvoicePaid: v2 cannot read v1: type_mismatch" in " ".join(done.stdout.split())
    line = one_line_error(herald("schemas", "check", HERALD_SCHEMAS_DIR=str(tmp_path / "nowhere")))
    assert "no such folder" in line and "HERALD_SCHEMAS_DIR" in line


def test_apikeys_create_refuses_an_unknown_scope_in_one_line():
    # refused before PostgreSQL is asked (nothing listens there)
    line = one_line_error(herald("apikeys", "create", "svc", "--scope", "send,write",
                                 HERALD_DATABASE_URL=f"postgresql://herald@{NOTHING_LISTENS}/herald"))
    assert "unknown scope write" in line and "send, read, admin, critical" in line
