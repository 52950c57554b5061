"""herald tail TOPIC: decoded records of a Herald topic as JSON lines (either framing), which kcat cannot print.

Reads with a private consumer that never joins a group (assign only) and commits nothing.
"""
from __future__ import annotations

import base64
import json
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast
from uuid import UUID

import typer

from infra.settings import Settings
from infra.tools.cli.errors import CliError
from infra.tools.cli.kafka import quiet_logger, require_broker

LAST = 10  # records per partition shown without --from-beginning, like tail(1)


def tail(
    topic: str = typer.Argument(..., help="a Herald topic: its short name (events, bulk, deliver.email, dlq, status) or full name"),
    from_beginning: bool = typer.Option(False, "--from-beginning", help=f"start at the oldest record (default: the last {LAST} "
                                        "of each partition)"),
    limit: int = typer.Option(None, "--limit", help="stop after printing this many records"),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep printing new records until Ctrl-C (or --limit)"),
) -> None:
    """Print records of TOPIC as JSON lines: topic, partition, offset, timestamp, key, headers and the decoded value.

    Values in Avro single-object encoding and in Confluent's wire format (through HERALD_SCHEMA_REGISTRY__URL) are
    decoded with Herald's catalog (and HERALD_SCHEMAS_DIR); a value that does not decode is printed with the reason
    and its first bytes. Without --follow, stops at the end of every partition as it was when tail started.
    """
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    from infra.kafka.config import KafkaConfigError, consumer_config
    from infra.kafka.consumer import watermarks
    from infra.schema_registry import codec_for
    from schemas.catalog import CatalogError
    from schemas.registry import RegistryUnavailable

    if limit is not None and limit < 1:
        raise CliError("--limit must be at least 1")
    settings = Settings()
    require_broker(settings)
    try:
        codec = codec_for(settings)
        conf = consumer_config(settings, f"{settings.app_id}-tail-{time.time_ns()}", logger=quiet_logger(),
                               **{"enable.partition.eof": True})
    except (CatalogError, KafkaConfigError) as exc:
        raise CliError(str(exc)) from exc
    c = Consumer(conf)
    try:
        name, partitions = _resolve(c, settings, topic)
        ends: dict[int, int] = {}
        starts = []
        for p in partitions:
            low, high = watermarks(c, TopicPartition(name, p), 10)
            start = low if from_beginning else max(low, high - LAST)
            ends[p] = high
            starts.append(TopicPartition(name, p, start))
        c.assign(starts)
        left = {p for p in partitions if starts[partitions.index(p)].offset < ends[p]}
        printed = 0
        while follow or left:
            for m in c.consume(500, 0.5):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        left.discard(m.partition())
                        continue
                    raise CliError(f"reading {name}: {err}")
                p, off = cast(int, m.partition()), cast(int, m.offset())
                if not follow and (p not in left or off >= ends[p]):
                    continue
                try:
                    line = _line(m, codec)
                except RegistryUnavailable as exc:
                    raise CliError(f"{exc}; check HERALD_SCHEMA_REGISTRY__URL") from exc
                print(json.dumps(line, default=_json_default, ensure_ascii=False), flush=True)
                printed += 1
                if limit is not None and printed >= limit:
                    return
                if not follow and off + 1 >= ends[p]:
                    left.discard(p)
    except KafkaException as exc:
        raise CliError(f"reading {topic}: {exc}") from exc
    except BrokenPipeError:  # `herald tail ... | head`
        sys.stderr.close()
    finally:
        c.close()


def _resolve(c: Any, settings: Settings, topic: str) -> tuple[str, list[int]]:
    """The full topic name (``events`` → ``herald.events``) and its partitions; one line naming Herald's topics if unknown."""
    md = c.list_topics(timeout=10)
    for name in (settings.topic(topic), topic):
        t = md.topics.get(name)
        if t is not None and t.error is None and t.partitions:
            return name, sorted(t.partitions)
    mine = sorted(n.removeprefix(settings.topic_prefix + ".") for n in md.topics if n.startswith(settings.topic_prefix + "."))
    raise CliError(f"no topic {topic} (nor {settings.topic(topic)}); Herald's topics: {', '.join(mine) or 'none yet'}")


def _text_or_hex(value: bytes | None) -> str | dict[str, str] | None:
    if value is None:
        return None
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": value.hex()}
    return text if text.isprintable() else {"hex": value.hex()}


def _line(m: Any, codec: Any) -> dict[str, Any]:
    from schemas.codec import DecodeError, framing

    _kind, ts = m.timestamp()
    value = m.value()
    out: dict[str, Any] = {
        "topic": m.topic(), "partition": m.partition(), "offset": m.offset(),
        "timestamp": datetime.fromtimestamp(ts / 1000, UTC).isoformat(timespec="milliseconds") if ts >= 0 else None,
        "key": _text_or_hex(m.key()),
        "headers": {k: _text_or_hex(v) for k, v in (m.headers() or [])},
        "framing": framing(value),
    }
    try:
        d = codec.decode(value)
    except DecodeError as exc:
        out["error"] = {"reason": exc.reason, "message": str(exc)}
        out["value_preview"] = _text_or_hex((value or b"")[:256])
        return out
    out["schema"] = {"name": d.name, "version": d.version, **({"id": d.schema_id} if d.schema_id is not None else {})}
    out["value"] = d.record
    return out


def _json_default(v: object) -> object:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, (Decimal, UUID)):
        return str(v)
    return repr(v)
