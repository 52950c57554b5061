"""The SMTP sink pipelines MAIL, RCPT and DATA when the server offers PIPELINING (the sandbox does, as Postfix and the
hosted providers do), with the same outcomes per delivery as smtplib's sendmail, over the real sandbox server."""
from __future__ import annotations

import asyncio
import smtplib

import pytest

from schemas.records import Delivery
from sinks.base import Sent
from sinks.errors import InvalidAddress, Retryable
from sinks.smtp import SmtpSink
from tests.support.sandbox import bare_sandbox, delivery  # noqa: F401 - fixture


def send(sandbox, ds, connections: int = 1):
    sink = SmtpSink(sandbox.settings.smtp_host, sandbox.settings.smtp_port, "Herald <noreply@herald.test>",
                    connections=connections)

    async def go():
        try:
            return await sink.send_batch([Delivery.from_avro(d) for d in ds])
        finally:
            await sink.close()

    return asyncio.run(go())


@pytest.fixture
def no_sendmail(monkeypatch):
    """smtplib's one-command-at-a-time sendmail must not be used against a server that pipelines."""
    def refuse(*args, **kw):
        raise AssertionError("sendmail called: the sink did not pipeline")
    monkeypatch.setattr(smtplib.SMTP, "sendmail", refuse)


def test_a_pipelined_chunk_reaches_the_inbox_each_message_under_its_id(bare_sandbox, no_sendmail):
    ds = [delivery("email") for _ in range(20)]
    ds[3]["text"] = ".a line starting with a dot\r\n.\r\nand a lone dot above"
    results = send(bare_sandbox, ds, connections=2)
    assert all(isinstance(r, Sent) for r in results), results
    inbox = {m["to"]: m for m in bare_sandbox.control.inbox("email")}
    assert sorted(inbox) == sorted(d["address"] for d in ds)
    assert {m["message_id"] for m in inbox.values()} == {r.provider_message_id for r in results}
    # dot-stuffing: the server un-stuffs, so the text arrives as written
    assert inbox[ds[3]["address"]]["text"].replace("\r\n", "\n").startswith(".a line starting with a dot\n.\nand")


def test_a_refused_recipient_is_permanent_and_the_connection_goes_on_with_the_next(bare_sandbox, no_sendmail):
    good = [delivery("email") for _ in range(3)]
    refused = delivery("email")
    bare_sandbox.control.faults("smtp", invalid_addresses=[refused["address"]])
    results = send(bare_sandbox, [good[0], refused, *good[1:]])   # one connection: the refusal is mid-stream
    assert isinstance(results[1], InvalidAddress) and "550" in str(results[1])
    assert [isinstance(r, Sent) for i, r in enumerate(results) if i != 1] == [True] * 3
    assert sorted(m["to"] for m in bare_sandbox.control.inbox("email")) == sorted(d["address"] for d in good)


def test_a_temporary_refusal_of_the_message_is_retryable_and_the_next_message_is_sent(bare_sandbox, no_sendmail):
    bare_sandbox.control.faults("smtp", storm=1)   # the first DATA answered 451
    first, second = delivery("email"), delivery("email")
    results = send(bare_sandbox, [first, second])
    assert isinstance(results[0], Retryable) and "451" in str(results[0])
    assert isinstance(results[1], Sent)
    assert [m["to"] for m in bare_sandbox.control.inbox("email")] == [second["address"]]


def test_a_streamed_message_the_server_refuses_at_its_content_is_retryable_and_the_stream_goes_on(bare_sandbox, no_sendmail):
    """One connection, already open: every message of the second chunk is streamed (content and the next envelope in
    one write); the first one's content is answered 451, the others are sent, each result in its place."""
    sink = SmtpSink(bare_sandbox.settings.smtp_host, bare_sandbox.settings.smtp_port, "noreply@herald.test", connections=1)
    first = [delivery("email")]
    chunk = [delivery("email") for _ in range(4)]

    async def go():
        try:
            opened = await sink.send_batch([Delivery.from_avro(d) for d in first])
            bare_sandbox.control.faults("smtp", storm=1)
            return opened, await sink.send_batch([Delivery.from_avro(d) for d in chunk])
        finally:
            await sink.close()

    opened, results = asyncio.run(go())
    assert isinstance(opened[0], Sent)
    assert isinstance(results[0], Retryable) and "451" in str(results[0])
    assert all(isinstance(r, Sent) for r in results[1:]), results
    assert sorted(m["to"] for m in bare_sandbox.control.inbox("email")) == sorted(d["address"] for d in first + chunk[1:])
