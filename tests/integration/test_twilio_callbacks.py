"""Twilio calls back: the SMS sink asks for status callbacks at Herald's public URL, and the sandbox's Twilio
posts them as Twilio does (signed with the account's auth token), so SMS receipts reach the webhook (issue 16)."""
from __future__ import annotations

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qsl

import pytest
from twilio.request_validator import RequestValidator

from schemas.records import Delivery
from sinks.base import Sent
from sinks.factory import build_sink
from tests.support.sandbox import bare_sandbox, delivery  # noqa: F401 - fixture
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration


class Callbacks(BaseHTTPRequestHandler):
    got: ClassVar[list[tuple[str, dict[str, str], str]]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        self.got.append((self.path, dict(parse_qsl(body)), self.headers.get("X-Twilio-Signature", "")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_an_sms_gets_signed_status_callbacks_at_the_public_url(bare_sandbox):
    Callbacks.got = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Callbacks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    public = f"http://127.0.0.1:{server.server_address[1]}"
    settings = bare_sandbox.settings.model_copy(update={"api": bare_sandbox.settings.api.model_copy(update={"public_url": public})})
    sink = build_sink(settings, "sms")

    async def go() -> list:
        try:
            return await sink.send_batch([Delivery.from_avro(delivery("sms", address="+4366012345678"))])
        finally:
            await sink.close()

    try:
        [sent] = asyncio.run(go())
        assert isinstance(sent, Sent)
        wait_for(lambda: len(Callbacks.got) >= 2, 20, message="two status callbacks")
        validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
        for path, form, signature in Callbacks.got:
            assert path == "/v1/webhooks/twilio" and form["MessageSid"] == sent.provider_message_id
            assert validator.validate(public + path, form, signature)
        assert [form["MessageStatus"] for _, form, _ in Callbacks.got] == ["sent", "delivered"]
    finally:
        server.shutdown()


def test_without_a_public_url_no_callback_is_asked_for(bare_sandbox):
    Callbacks.got = []
    sink = build_sink(bare_sandbox.settings, "sms")

    async def go() -> list:
        try:
            return await sink.send_batch([Delivery.from_avro(delivery("sms", address="+4366012345679"))])
        finally:
            await sink.close()

    [sent] = asyncio.run(go())
    assert isinstance(sent, Sent)
    time.sleep(0.5)
    assert Callbacks.got == []
