"""Every `herald ... list` prints one JSON object per line with --json (scripts read them), against the real database."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest

from infra.settings import Settings
from tests.support.env import settings_env

pytestmark = pytest.mark.integration


def herald(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings_env(settings), "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "infra.tools.cli.main", *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def rows(done: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_apikeys_list_json(settings: Settings):
    herald(settings, "apikeys", "create", "json-check-service")
    keys = [k for k in rows(herald(settings, "apikeys", "list", "--json")) if k["name"] == "json-check-service"]
    assert len(keys) == 1
    assert keys[0]["prefix"].startswith("hk_") and keys[0]["revoked"] is None and keys[0]["created"]
    assert keys[0]["scopes"] == ["send", "read", "admin"] and keys[0]["tenant"] is None and keys[0]["rate_limit"] is None


def test_apikeys_create_with_scopes_tenant_and_rate(settings: Settings):
    herald(settings, "apikeys", "create", "scoped-service", "--scope", "read", "--scope", "critical,send",
           "--tenant", "acme", "--rate-limit", "7")
    [key] = [k for k in rows(herald(settings, "apikeys", "list", "--json")) if k["name"] == "scoped-service"]
    assert key["scopes"] == ["send", "read", "critical"] and key["tenant"] == "acme" and key["rate_limit"] == 7

    herald(settings, "apikeys", "update", str(key["id"]), "--scope", "send,critical", "--default-rate")
    [key] = [k for k in rows(herald(settings, "apikeys", "list", "--json")) if k["name"] == "scoped-service"]
    assert key["scopes"] == ["send", "critical"] and key["tenant"] == "acme" and key["rate_limit"] is None


def test_templates_list_json(settings: Settings):
    herald(settings, "templates", "seed")
    got = rows(herald(settings, "templates", "list", "--json", "--code", "order_confirmation"))
    assert got and {r["code"] for r in got} == {"order_confirmation"}
    assert all(r["active_version"] >= 1 and r["versions"] >= 1 and r["channel"] in ("email", "sms", "push") for r in got)


def test_campaign_list_json(settings: Settings, db: psycopg.Connection):
    db.execute("INSERT INTO campaigns (id, template, source, total, produced, status) "
               "VALUES ('c-json-1', 'promo', '{}', 10, 4, 'producing')")
    got = [c for c in rows(herald(settings, "campaign", "list", "--json")) if c["id"] == "c-json-1"]
    assert got == [{**got[0], "id": "c-json-1", "template": "promo", "status": "producing", "produced": 4, "total": 10}]


def test_segments_list_json_and_table(settings: Settings):
    name = f"{settings.app_id}-vienna"
    query = "SELECT id FROM users WHERE time_zone = 'Europe/Vienna'"
    herald(settings, "segments", "save", name, "--query", query, "--description", "users in Vienna")
    [got] = [s for s in rows(herald(settings, "segments", "list", "--json")) if s["name"] == name]
    assert got == {**got, "query": query, "description": "users in Vienna"} and got["updated_at"]
    table = herald(settings, "segments", "list").stdout   # other tests' segments may widen (and wrap) the columns
    assert all(column in table for column in ("name", "query", "description", "updated")) and name in table
