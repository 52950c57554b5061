"""JSON logs with the trace id; email addresses, phone numbers and device tokens masked."""
from __future__ import annotations

import contextvars
import json
import logging
import re
import time
from typing import Any

trace_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("herald_trace_id", default=None)

_EMAIL = re.compile(r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})\b")
_PHONE = re.compile(r"(?<![\w/])\+(\d{2})\d{5,11}(\d{2})\b")
_TOKEN = re.compile(r"\b([A-Za-z0-9_-]{6})[A-Za-z0-9_:-]{26,}\b")


def mask(text: str) -> str:
    """``jane@example.com`` → ``j***@example.com``; ``+436641234567`` → ``+43*******67``; long tokens cut to 6 characters."""
    text = _EMAIL.sub(lambda m: f"{m[1]}***@{m[2]}", text)
    text = _PHONE.sub(lambda m: f"+{m[1]}{'*' * (len(m[0]) - 5)}{m[2]}", text)
    return _TOKEN.sub(lambda m: f"{m[1]}…", text)


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
            out["trace_id"] = trace
        if record.exc_info:
            out["error"] = mask(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A dictConfig for every Herald process (Faust's worker takes it too)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }
