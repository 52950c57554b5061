"""A Schema Registry stand-in: the subset of Confluent Schema Registry's REST API that clients use.

No Confluent-compatible registry server can be installed on the machines Herald is built on
(Apicurio's application needs an artifact Maven Central does not serve; Confluent's registry and
Karapace are not on the reachable package registries), so, as for the providers, the sandbox
speaks the wire format and the tests drive it only through confluent-kafka's real
``SchemaRegistryClient`` and ``AvroSerializer``. It is never on Herald's production path.

    POST   /subjects/{subject}/versions                    register (→ {"id"}); checks the subject's compatibility
    GET    /subjects                                       subjects
    GET    /subjects/{subject}/versions                    [1, 2, ...]
    GET    /subjects/{subject}/versions/{version|latest}   {"subject", "version", "id", "schema"}
    POST   /subjects/{subject}                             look a schema up in a subject
    DELETE /subjects/{subject}                             forget a subject (→ its versions)
    GET    /schemas/ids/{id}                               {"schema"} (+ "schemaType" when not AVRO)
    GET    /schemas/ids/{id}/versions                      [{"subject", "version"}]
    GET    /config, PUT /config                            global compatibility level
    GET    /config/{subject}, PUT /config/{subject}        a subject's level (GET: 40408 unless defaultToGlobal=true)
    POST   /compatibility/subjects/{subject}/versions/{v}  {"is_compatible"} (+ "messages" with ?verbose=true)

Compatibility is Apache Avro's own checker (``schemas.compat``), as Confluent's registry uses Java's.
Errors are Confluent's: ``{"error_code": 40401, "message": ...}``. Basic auth is checked when the
sandbox is given a user. ``GET /_sandbox/registry`` shows the requests counted per path kind.
Everything runs on one event loop, so no locks are needed.
"""
from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from fastavro import parse_schema
from fastavro.schema import to_parsing_canonical_form

from infra.tools.sandbox.threaded import in_thread
from schemas.compat import LEVELS, level_problems

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
SUBJECT_NOT_FOUND, VERSION_NOT_FOUND, SCHEMA_NOT_FOUND, SUBJECT_LEVEL_NOT_FOUND = 40401, 40402, 40403, 40408
INVALID_SCHEMA, INVALID_VERSION, INVALID_LEVEL = 42201, 42202, 42203


@dataclass
class RegistryState:
    level: str = "BACKWARD"                                      # Confluent's default
    schemas: list[tuple[str, str]] = field(default_factory=list)  # id - 1 → (schema text, schema type)
    by_canonical: dict[tuple[str, str], int] = field(default_factory=dict)
    subjects: dict[str, list[int]] = field(default_factory=dict)  # subject → ids of versions 1..n
    levels: dict[str, str] = field(default_factory=dict)
    auth: tuple[str, str] | None = None
    requests: Counter[str] = field(default_factory=Counter)

    def schema(self, schema_id: int) -> tuple[str, str] | None:
        return self.schemas[schema_id - 1] if 1 <= schema_id <= len(self.schemas) else None

    def level_of(self, subject: str) -> str:
        return self.levels.get(subject, self.level)


STATE = web.AppKey("registry_state", RegistryState)


class RegistryError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type=CONTENT_TYPE)


@web.middleware
async def _errors_and_auth(request: web.Request, handler: Any) -> web.StreamResponse:
    state = request.app[STATE]
    if not request.path.startswith("/_sandbox"):
        state.requests[request.method + " " + request.path.strip("/").split("/")[0]] += 1
        if state.auth is not None and not _authorized(request.headers.get("Authorization", ""), state.auth):
            return _json({"error_code": 401, "message": "Unauthorized"}, 401)
    try:
        return await handler(request)
    except RegistryError as exc:
        return _json({"error_code": exc.code, "message": exc.message}, exc.status)


def _authorized(header: str, auth: tuple[str, str]) -> bool:
    if not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return False
    return (user, password) == auth


def build_registry_app(state: RegistryState) -> web.Application:
    app = web.Application(middlewares=[_errors_and_auth])
    app[STATE] = state
    r = app.router
    r.add_get("/subjects", subjects)
    r.add_post("/subjects/{subject}/versions", register)
    r.add_get("/subjects/{subject}/versions", versions)
    r.add_get("/subjects/{subject}/versions/{version}", version)
    r.add_post("/subjects/{subject}", lookup)
    r.add_delete("/subjects/{subject}", delete_subject)
    r.add_get("/schemas/ids/{id}", schema_by_id)
    r.add_get("/schemas/ids/{id}/versions", versions_of_id)
    r.add_get("/config", get_config)
    r.add_put("/config", put_config)
    r.add_get("/config/{subject}", get_config)
    r.add_put("/config/{subject}", put_config)
    r.add_post("/compatibility/subjects/{subject}/versions/{version}", compatibility)
    r.add_post("/compatibility/subjects/{subject}/versions", compatibility)
    r.add_get("/_sandbox/registry", stats)
    return app


# --- helpers ---------------------------------------------------------------------------------

async def _schema_body(request: web.Request) -> tuple[str, str, str]:
    """(schema text, schema type, canonical form) of a request body ``{"schema": "...", "schemaType": ...}``."""
    try:
        body = await request.json()
        text = body["schema"]
        schema_type = body.get("schemaType") or "AVRO"
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RegistryError(422, INVALID_SCHEMA, f"Invalid schema: the body needs a schema string ({exc})") from exc
    if body.get("references"):
        raise RegistryError(422, INVALID_SCHEMA, "Invalid schema: schema references are not supported by the sandbox")
    if schema_type != "AVRO":
        return text, schema_type, text
    try:
        canonical = to_parsing_canonical_form(parse_schema(json.loads(text)))
    except Exception as exc:  # any parse failure is the client's invalid schema
        raise RegistryError(422, INVALID_SCHEMA, f"Invalid schema {text[:200]}: {exc}") from exc
    return text, schema_type, canonical


def _subject(state: RegistryState, subject: str) -> list[int]:
    if subject not in state.subjects:
        raise RegistryError(404, SUBJECT_NOT_FOUND, f"Subject '{subject}' not found.")
    return state.subjects[subject]


def _version_index(ids: list[int], raw: str) -> int:
    if raw in ("latest", "-1"):
        return len(ids) - 1
    try:
        n = int(raw)
    except ValueError:
        raise RegistryError(422, INVALID_VERSION, f"The specified version '{raw}' is not a valid version id.") from None
    if n < 1:
        raise RegistryError(422, INVALID_VERSION, f"The specified version '{raw}' is not a valid version id.")
    if n > len(ids):
        raise RegistryError(404, VERSION_NOT_FOUND, f"Version {n} not found.")
    return n - 1


def _registered(state: RegistryState, subject: str, index: int) -> dict[str, Any]:
    sid = state.subjects[subject][index]
    text, schema_type = state.schemas[sid - 1]
    out: dict[str, Any] = {"subject": subject, "version": index + 1, "id": sid, "schema": text}
    if schema_type != "AVRO":
        out["schemaType"] = schema_type
    return out


def _texts(state: RegistryState, ids: list[int]) -> list[str]:
    return [state.schemas[i - 1][0] for i in ids if state.schemas[i - 1][1] == "AVRO"]


# --- handlers ------------------------------------------------------------------------------

async def subjects(request: web.Request) -> web.Response:
    return _json(sorted(request.app[STATE].subjects))


async def register(request: web.Request) -> web.Response:
    state = request.app[STATE]
    subject = request.match_info["subject"]
    text, schema_type, canonical = await _schema_body(request)
    ids = state.subjects.get(subject, [])
    existing = state.by_canonical.get((schema_type, canonical))
    if existing is not None and existing in ids:
        return _json({"id": existing})
    if schema_type == "AVRO":
        found = level_problems(state.level_of(subject), text, _texts(state, ids))
        if found:
            raise RegistryError(409, 409, f"Schema being registered is incompatible with an earlier schema for subject "
                                          f"\"{subject}\", details: {found}")
    if existing is None:
        state.schemas.append((text, schema_type))
        existing = len(state.schemas)
        state.by_canonical[(schema_type, canonical)] = existing
    state.subjects.setdefault(subject, []).append(existing)
    return _json({"id": existing})


async def versions(request: web.Request) -> web.Response:
    ids = _subject(request.app[STATE], request.match_info["subject"])
    return _json(list(range(1, len(ids) + 1)))


async def version(request: web.Request) -> web.Response:
    state = request.app[STATE]
    subject = request.match_info["subject"]
    index = _version_index(_subject(state, subject), request.match_info["version"])
    return _json(_registered(state, subject, index))


async def lookup(request: web.Request) -> web.Response:
    state = request.app[STATE]
    subject = request.match_info["subject"]
    ids = _subject(state, subject)
    _, schema_type, canonical = await _schema_body(request)
    sid = state.by_canonical.get((schema_type, canonical))
    if sid is None or sid not in ids:
        raise RegistryError(404, SCHEMA_NOT_FOUND, "Schema not found")
    return _json(_registered(state, subject, ids.index(sid)))


async def delete_subject(request: web.Request) -> web.Response:
    state = request.app[STATE]
    subject = request.match_info["subject"]
    ids = _subject(state, subject)
    del state.subjects[subject]
    state.levels.pop(subject, None)
    return _json(list(range(1, len(ids) + 1)))


def _id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise RegistryError(404, SCHEMA_NOT_FOUND, "Schema not found") from None


async def schema_by_id(request: web.Request) -> web.Response:
    found = request.app[STATE].schema(_id(request))
    if found is None:
        raise RegistryError(404, SCHEMA_NOT_FOUND, "Schema not found")
    text, schema_type = found
    return _json({"schema": text} if schema_type == "AVRO" else {"schema": text, "schemaType": schema_type})


async def versions_of_id(request: web.Request) -> web.Response:
    state = request.app[STATE]
    sid = _id(request)
    if state.schema(sid) is None:
        raise RegistryError(404, SCHEMA_NOT_FOUND, "Schema not found")
    return _json([{"subject": s, "version": i + 1} for s, ids in sorted(state.subjects.items()) for i, x in enumerate(ids)
                  if x == sid])


async def get_config(request: web.Request) -> web.Response:
    state = request.app[STATE]
    subject = request.match_info.get("subject")
    if subject is None:
        return _json({"compatibilityLevel": state.level})
    if subject not in state.levels and request.query.get("defaultToGlobal", "").lower() != "true":
        raise RegistryError(404, SUBJECT_LEVEL_NOT_FOUND, f"Subject '{subject}' does not have subject-level compatibility "
                                                          "configured")
    return _json({"compatibilityLevel": state.level_of(subject)})


async def put_config(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        level = str((await request.json())["compatibility"]).upper()
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryError(422, INVALID_LEVEL, f"Invalid compatibility level: {exc}") from exc
    if level not in LEVELS:
        raise RegistryError(422, INVALID_LEVEL, f"Invalid compatibility level. Valid values are {', '.join(LEVELS)}")
    subject = request.match_info.get("subject")
    if subject is None:
        state.level = level
    else:
        state.levels[subject] = level
    return _json({"compatibility": level})


async def compatibility(request: web.Request) -> web.Response:
    state = request.app[STATE]
    subject = request.match_info["subject"]
    text, schema_type, _ = await _schema_body(request)
    ids = state.subjects.get(subject, [])
    raw_version = request.match_info.get("version")
    if raw_version is not None:
        if not ids:
            raise RegistryError(404, SUBJECT_NOT_FOUND, f"Subject '{subject}' not found.")
        index = _version_index(ids, raw_version)
        level = state.level_of(subject)
        # against one version: the level's direction, never transitive
        against = _texts(state, ids[: index + 1])
        found = level_problems(level.replace("_TRANSITIVE", ""), text, against) if schema_type == "AVRO" else []
    else:
        found = level_problems(state.level_of(subject), text, _texts(state, ids)) if schema_type == "AVRO" else []
    body: dict[str, Any] = {"is_compatible": not found}
    if request.query.get("verbose", "").lower() == "true":
        body["messages"] = found
    return _json(body)


async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response({"requests": dict(state.requests), "subjects": {s: len(v) for s, v in state.subjects.items()},
                              "schemas": len(state.schemas), "level": state.level})


# --- running it ------------------------------------------------------------------------------

class RegistrySandbox:
    """The registry on ``host:port``; ``stop()`` then ``start()`` again keeps what was registered (an outage)."""

    def __init__(self, host: str, port: int, auth: tuple[str, str] | None = None, state: RegistryState | None = None) -> None:
        self.host, self.port = host, port
        self.state = state or RegistryState(auth=auth)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(build_registry_app(self.state), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class RunningRegistry:
    """A ``RegistrySandbox`` in a background thread with its own event loop; ``outage()`` stops and restarts it."""

    def __init__(self, sandbox: RegistrySandbox, loop: asyncio.AbstractEventLoop) -> None:
        self.sandbox = sandbox
        self._loop = loop

    @property
    def url(self) -> str:
        return self.sandbox.url

    @property
    def state(self) -> RegistryState:
        return self.sandbox.state

    def _call(self, coro: Any) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def stop(self) -> None:
        """The registry goes away: connections are refused until ``start()``."""
        self._call(self.sandbox.stop())

    def start(self) -> None:
        self._call(self.sandbox.start())


@contextmanager
def running_registry(host: str, port: int, auth: tuple[str, str] | None = None) -> Iterator[RunningRegistry]:
    sandbox = RegistrySandbox(host, port, auth)
    with in_thread(sandbox, "herald-registry-sandbox") as loop:
        yield RunningRegistry(sandbox, loop)
