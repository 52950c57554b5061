"""JSON logs with the trace id; addresses, phone numbers, device tokens and secrets masked in every line.

The trace id of a line is its record's ``extra={"trace_id": ...}`` if given, else ``trace_id_var``: the batch runner
sets it to the record in hand (``streams.runtime.runner``), the API to the request's (``producers.api.middleware``).
A line about a batch of several records carries none: each per-record event (a dead letter, a record's failure)
is logged on its own line with its own trace id.

Masking replaces the whole value (no prefix survives): an address keeps only its
domain, a token only its length and a short hash (so lines about the same token
can still be matched), a secret nothing. ``logging_config`` installs the
formatter on the root handler, which every logger (uvicorn's, urllib3's,
python_http_client's, Faust's) reaches.
"""
from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

trace_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("herald_trace_id", default=None)


@contextmanager
def traced(trace_id: str | None) -> Iterator[None]:
    """Every line logged inside (in this task and the tasks it starts) carries ``trace_id``; None: no trace id."""
    token = trace_id_var.set(trace_id)
    try:
        yield
    finally:
        trace_id_var.reset(token)

# order matters: secrets with a recognisable shape first, then addresses, then anything token-like
_AUTH_HEADER = re.compile(r"\b(Bearer|Basic|bearer|basic)(\s+)[A-Za-z0-9._~+/=:-]{4,}")
_AUTH_FIELD = re.compile(
    r"(?i)((?:authorization|x-api-key|api[_-]?key|auth[_-]?token|access[_-]?token|password|passwd|secret)['\"]?\s*[:=]\s*['\"]?)"
    r"(?!\[)[^\s'\",;&}]+")
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@")
_SENDGRID_KEY = re.compile(r"\bSG\.[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)?")
_HERALD_KEY = re.compile(r"\bhk_[A-Za-z0-9_-]+")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})\b")
_PHONE = re.compile(r"(?<![\w+])\+\d{7,15}\b")
# long runs with a digit: FCM and APNs tokens, random keys (long code identifiers in tracebacks have none)
_TOKEN = re.compile(r"(?<![\w:-])(?=[A-Za-z_:-]*\d)[A-Za-z0-9_:-]{32,}")
# ids Herald writes itself (uuid4().hex event, notification and trace ids; delivery ids) stay readable
_OWN_ID = re.compile(r"^(?:[0-9a-f]{32}|[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})$")

# access-log paths are percent-encoded: /v1/users/jane%40example.com must mask like jane@example.com
_URL_ESCAPE = re.compile(r"%(40|2[Bb]|3[Aa])")
_UNESCAPED = {"40": "@", "2B": "+", "2b": "+", "3A": ":", "3a": ":"}

_known_secrets: set[str] = set()


def register_secrets(values: Iterable[str | None]) -> None:
    """Mask these exact values wherever they appear (configured provider keys, passwords), whatever their shape."""
    for v in values:
        if v and len(v) >= 4:
            _known_secrets.add(v)


def _token(m: re.Match[str]) -> str:
    value = m[0]
    if _OWN_ID.match(value):
        return value
    return f"[token len={len(value)} sha={hashlib.sha256(value.encode()).hexdigest()[:8]}]"


def mask(text: str) -> str:
    """``jane@example.com`` → ``[email]@example.com``; ``+436641234567`` → ``[phone]``; tokens → ``[token len=… sha=…]``;
    SendGrid and Herald API keys, Authorization values, URL and ``password=`` passwords → ``[secret]``."""
    text = _URL_ESCAPE.sub(lambda m: _UNESCAPED[m[1]], text)
    for secret in sorted(_known_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "[secret]")
    text = _AUTH_HEADER.sub(lambda m: f"{m[1]}{m[2]}[secret]", text)
    text = _AUTH_FIELD.sub(lambda m: f"{m[1]}[secret]", text)
    text = _URL_PASSWORD.sub(lambda m: f"{m[1]}[secret]@", text)
    text = _SENDGRID_KEY.sub("[secret]", text)
    text = _HERALD_KEY.sub("[api-key]", text)
    text = _EMAIL.sub(lambda m: f"[email]@{m[1]}", text)
    text = _PHONE.sub("[phone]", text)
    return _TOKEN.sub(_token, text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": mask(record.getMessage()),
        }
        trace = getattr(record, "trace_id", None) or trace_id_var.get()
        if trace:
            out["trace_id"] = mask(str(trace))
        if record.exc_info:
            out["error"] = mask(self.formatException(record.exc_info))
        if record.stack_info:
            out["stack"] = mask(self.formatStack(record.stack_info))
        return json.dumps(out, ensure_ascii=False)


def settings_secrets(settings: Any) -> list[str]:
    """The secret values of a ``Settings`` (and the passwords inside its URLs), for ``register_secrets``."""
    from pydantic import BaseModel, SecretStr

    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
            if "://" in text:
                found += [m[0][len(m[1]):-1] for m in _URL_PASSWORD.finditer(text)]
            else:
                found.append(text)
        elif isinstance(value, BaseModel):  # sections (api, deliver, kafka) may hold secrets of their own
            found += settings_secrets(value)
    return found


def logging_config(level: str = "INFO", settings: Any = None) -> dict[str, Any]:
    """A dictConfig for every Herald process (Faust's worker and uvicorn take it too).

    uvicorn's own loggers get no handlers of their own: they propagate to the root's masking JSON handler.
    ``settings``' secret values are masked verbatim as well.
    """
    if settings is not None:
        register_secrets(settings_secrets(settings))
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {name: {"level": level, "handlers": [], "propagate": True}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }
