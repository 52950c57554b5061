"""herald apikeys: API keys for the HTTP API, stored as sha256 hashes (the key is shown once)."""
from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from infra.tools.cli.errors import CliError
from infra.tools.cli.output import print_rows

app = typer.Typer(help="API keys of the HTTP API: create (shown once), list, update scopes or rate, revoke.", no_args_is_help=True)


def _connect():
    import psycopg

    from infra.db import connect
    from infra.settings import Settings

    try:
        return connect(Settings(), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise CliError(f"PostgreSQL does not answer ({exc}); start it with `herald stack up` or check HERALD_DATABASE_URL") from exc


def _scopes(given: list[str] | None) -> list[str]:
    from producers.api.keys import DEFAULT_SCOPES, Scope

    if not given:
        return [s.value for s in DEFAULT_SCOPES]
    names = [p.strip() for g in given for p in g.split(",") if p.strip()]
    if unknown := [n for n in names if n not in {s.value for s in Scope}]:
        raise CliError(f"unknown scope {', '.join(unknown)}: expected any of {', '.join(s.value for s in Scope)}")
    return sorted(set(names), key=[s.value for s in Scope].index)


@app.command()
def create(
    name: str = typer.Argument(..., help="who or what uses the key, e.g. 'checkout-service'"),
    scope: list[str] | None = typer.Option(
        None, "--scope", help="send, read, admin, critical (repeat or comma-separate; default: send, read, admin). "
        "critical lets the caller pick a critical category such as security"),
    tenant: str | None = typer.Option(None, "--tenant", help="the key reaches only this tenant's users (default: every user)"),
    rate_limit: int | None = typer.Option(None, "--rate-limit", min=1,
                                          help="requests per rate window for this key (default: HERALD_API__RATE_LIMIT)"),
) -> None:
    """Create a key and print it ONCE: only its sha256 hash is stored, so a lost key cannot be shown again (revoke it and create another)."""
    from producers.api.keys import new_key

    name = name.strip()
    if not name or len(name) > 200:
        raise CliError("the name must be 1 to 200 characters")
    if tenant is not None and not (tenant := tenant.strip()):
        raise CliError("--tenant needs a name (leave it out for a key that reaches every tenant)")
    scopes = _scopes(scope)
    k = new_key()
    with _connect() as conn:
        key_id = conn.execute(
            "INSERT INTO api_keys (name, prefix, key_hash, scopes, tenant, rate_limit) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (name, k.prefix, k.key_hash, scopes, tenant, rate_limit),
        ).fetchone()[0]
    out = Console()
    where = f"tenant {tenant}" if tenant else "every tenant"
    out.print(f"created key {key_id} ({name}; scopes {', '.join(scopes)}; {where}); store it now, it is not shown again:",
              highlight=False)
    print(k.key)


@app.command("list")
def list_keys(all_: bool = typer.Option(False, "--all", help="include revoked keys"),
              as_json: bool = typer.Option(False, "--json", help="one JSON object per line instead of a table")) -> None:
    """List keys: id, name, prefix (the 8 characters after hk_), scopes, tenant, own rate limit, created, revoked."""
    with _connect() as conn:
        rows = conn.execute(
            "SELECT id, name, prefix, created_at, revoked_at, scopes, tenant, rate_limit FROM api_keys"
            + ("" if all_ else " WHERE revoked_at IS NULL") + " ORDER BY id"
        ).fetchall()
    print_rows(rows, as_json,
               record=lambda r: {"id": r[0], "name": r[1], "prefix": f"hk_{r[2]}", "scopes": r[5], "tenant": r[6],
                                 "rate_limit": r[7], "created": r[3].isoformat(), "revoked": r[4].isoformat() if r[4] else None},
               table=Table("id", "name", "prefix", "scopes", "tenant", "rate", "created", "revoked"),
               cells=lambda r: (str(r[0]), r[1], f"hk_{r[2]}_…", ",".join(r[5]), r[6] or "(all)", str(r[7] or "default"),
                                f"{r[3]:%Y-%m-%d %H:%M}", f"{r[4]:%Y-%m-%d %H:%M}" if r[4] else ""))


@app.command()
def update(
    key: str = typer.Argument(..., help="the key id (from `list`)"),
    scope: list[str] | None = typer.Option(None, "--scope", help="replace the scopes: send, read, admin, critical"),
    rate_limit: int | None = typer.Option(None, "--rate-limit", min=1, help="this key's requests per rate window"),
    default_rate: bool = typer.Option(False, "--default-rate", help="drop the key's own rate: HERALD_API__RATE_LIMIT applies"),
) -> None:
    """Change an active key's scopes or rate (e.g. grant `critical` to the key of the service sending password resets).

    API processes see the change within HERALD_API__KEY_CACHE_SECONDS. A key's tenant never changes: create a new key.
    """
    if not key.isdigit():
        raise CliError(f"'{key}' is not a key id; see `herald apikeys list`")
    if scope is None and rate_limit is None and not default_rate:
        raise CliError("nothing to change: give --scope, --rate-limit or --default-rate")
    if rate_limit is not None and default_rate:
        raise CliError("give --rate-limit or --default-rate, not both")
    sets: list[str] = []
    args: list[object] = []
    if scope is not None:
        sets.append("scopes = %s")
        args.append(_scopes(scope))
    if rate_limit is not None or default_rate:
        sets.append("rate_limit = %s")
        args.append(rate_limit)
    with _connect() as conn:
        row = conn.execute(f"UPDATE api_keys SET {', '.join(sets)} WHERE id = %s AND revoked_at IS NULL "
                           "RETURNING id, name, scopes, rate_limit", (*args, int(key))).fetchone()
    if row is None:
        raise CliError(f"no active key {key}; see `herald apikeys list`")
    Console().print(f"key {row[0]} ({row[1]}): scopes {', '.join(row[2])}; rate {row[3] or 'default'}", highlight=False)


@app.command()
def revoke(key: str = typer.Argument(..., help="the key id (from `list`) or its prefix")) -> None:
    """Revoke a key; API processes stop accepting it within HERALD_API__KEY_CACHE_SECONDS (default 5 s)."""
    with _connect() as conn:
        if key.isdigit():
            rows = conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL RETURNING id, name",
                                (int(key),)).fetchall()
        else:
            prefix = key.removeprefix("hk_").split("_", 1)[0]
            found = conn.execute("SELECT count(*) FROM api_keys WHERE prefix = %s AND revoked_at IS NULL", (prefix,)).fetchone()[0]
            if found > 1:
                raise CliError(f"{found} active keys share prefix {prefix}; revoke by id (see `herald apikeys list`)")
            rows = conn.execute("UPDATE api_keys SET revoked_at = now() WHERE prefix = %s AND revoked_at IS NULL RETURNING id, name",
                                (prefix,)).fetchall()
    if not rows:
        raise CliError(f"no active key '{key}'; see `herald apikeys list`")
    Console().print(f"revoked key {rows[0][0]} ({rows[0][1]})", highlight=False)
