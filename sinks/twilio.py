"""Twilio sink: the real ``twilio`` SDK, several Messages.create calls in flight.

The SDK is blocking (requests), so calls run on a small thread pool; the HTTP
client subclass rewrites ``https://api.twilio.com`` to the configured base URL
(the sandbox) and remembers a 429's Retry-After, which TwilioRestException
does not carry.

Outcomes are per message: a body or number that cannot be carried (NUL or
another control character, over Twilio's 1600 characters, see
``sinks.content``) is that delivery's Permanent result without a call.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from schemas.records import Delivery
from schemas.vocabulary import Channel
from sinks.base import Result, Sent, parse_retry_after
from sinks.content import check_body, check_token
from sinks.errors import DeliveryError, InvalidAddress, Permanent, ProviderRejected, RateLimited, Retryable

TWILIO_API = "https://api.twilio.com"
MAX_BODY_CHARS = 1600   # Twilio refuses longer bodies (error 21617)
# authenticate (20003), account suspended or closed (20005, 10001, 10002), out of funds (20429 is a rate: not here)
ACCOUNT_REFUSED_CODES = {20003, 20005, 10001, 10002}
INVALID_NUMBER_CODES = {21211, 21214, 21217, 21401, 21407, 21408, 21610, 21612, 21614}


class RewritingHttpClient(TwilioHttpClient):
    def __init__(self, base_url: str, timeout: float = 15.0) -> None:
        super().__init__(pool_connections=True, timeout=timeout)
        self.base_url = base_url.rstrip("/")
        self._local = threading.local()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32)
        assert self.session is not None
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.trust_env = False if base_url.startswith("http://127.") else self.session.trust_env

    def request(self, method: str, url: str, *args, **kwargs) -> Response:
        if url.startswith(TWILIO_API):
            url = self.base_url + url[len(TWILIO_API):]
        resp = super().request(method, url, *args, **kwargs)
        self._local.retry_after = resp.headers.get("Retry-After") if resp.status_code == 429 else None
        return resp

    def last_retry_after(self) -> str | None:
        return getattr(self._local, "retry_after", None)


class TwilioSink:
    provider = "twilio"
    channel = Channel.SMS
    max_batch = 200

    def __init__(self, account_sid: str, auth_token: str, sender: str, base_url: str, in_flight: int = 8,
                 status_callback: str | None = None, provider: str = "twilio") -> None:
        self.provider = provider   # a second account has a name of its own: its own circuit and metrics
        self._http = RewritingHttpClient(base_url)
        # where Twilio posts the message's status changes (Herald's /v1/webhooks/twilio): without it, no SMS receipt
        self._extra: dict[str, str] = {"status_callback": status_callback} if status_callback else {}
        self._client = Client(account_sid, auth_token, http_client=self._http)
        self._sender = sender
        self._pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="twilio")

    async def send_batch(self, deliveries: list[Delivery]) -> list[Result]:
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(self._pool, self._send_one, d) for d in deliveries)))

    async def close(self) -> None:
        self._pool.shutdown(wait=False)

    def _send_one(self, d: Delivery) -> Result:
        try:
            check_token("phone number", d.address)
            check_body("text", d.text, MAX_BODY_CHARS)
        except DeliveryError as err:
            return err
        try:
            msg = self._client.messages.create(to=d.address, from_=self._sender, body=d.text, **self._extra)
        except TwilioRestException as exc:
            return self._map(exc)
        except (requests.RequestException, TwilioException, OSError) as exc:
            return Retryable(f"twilio unreachable: {exc}")
        except Exception as exc:  # noqa: BLE001 - this message only: the others of the batch keep their results
            return Retryable(f"twilio: unexpected error: {exc!r}")
        return Sent(str(msg.sid))

    def _map(self, exc: TwilioRestException) -> Result:
        text = f"twilio {exc.status} code {exc.code}: {exc.msg}"
        if exc.status == 429:
            return RateLimited(text, parse_retry_after(self._http.last_retry_after()))
        if exc.status >= 500:
            return Retryable(text)
        if exc.code in INVALID_NUMBER_CODES:
            return InvalidAddress(text)
        if exc.status in (401, 403) or exc.code in ACCOUNT_REFUSED_CODES:
            return ProviderRejected(text)
        return Permanent(text)
