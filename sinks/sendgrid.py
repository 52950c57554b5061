"""SendGrid sink: the real ``sendgrid`` SDK, up to 1000 personalizations per v3 mail/send request.

Every delivery carries its own rendered text, so one request batches them with
per-personalization ``subject`` and ``substitutions`` (the content holds only
the tags). SendGrid substitutes tags in the subject, the content and the
custom args, and a substituted value may itself be scanned for tags, so the
tags of each request are random and checked to occur nowhere in that
request's subjects, texts, HTML or custom args: no template output can be
taken for a tag. A delivery too large for substitutions (SendGrid allows
10 000 bytes per personalization) goes in a request of its own.

Outcomes are per delivery: one that cannot be carried (a subject with CR/LF,
an address that is not one mailbox, see ``sinks.content``) is left out of the
request as its own Permanent result. SendGrid rejects a whole request for one
bad personalization (400, with ``personalizations.N...`` in the error's
field): those deliveries become InvalidAddress (an address field) or Permanent
and the rest are sent again without them.
"""
from __future__ import annotations

import asyncio
import json
import re
import secrets
import urllib.error
from email.utils import parseaddr
from typing import Any

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from infra.unsubscribe import Unsubscribe
from schemas.records import Delivery
from schemas.vocabulary import SENDGRID_DELIVERY_ARG, SENDGRID_NOTIFICATION_ARG, Channel
from sinks.base import Result, Sent, parse_retry_after
from sinks.content import check_body, check_email_address, check_header
from sinks.errors import DeliveryError, InvalidAddress, Permanent, ProviderRejected, RateLimited, Retryable

MAX_SUBSTITUTION_BYTES = 10_000
MAX_ROUNDS = 3   # requests per group: the first, and again without the personalizations SendGrid named
_FIELD = re.compile(r"^personalizations\.(\d+)\.")


class SendGridSink:
    provider = "sendgrid"
    channel = Channel.EMAIL
    max_batch = 1000

    def __init__(self, api_key: str, host: str, sender: str, timeout: float = 30.0,
                 unsubscribe: Unsubscribe | None = None) -> None:
        self._unsubscribe = unsubscribe
        self._sg = SendGridAPIClient(api_key, host=host)
        self._sg.client.timeout = timeout
        self._sender = sender
        name, email = parseaddr(sender)
        self._from = {"email": email, "name": name} if name else {"email": email}

    async def send_batch(self, deliveries: list[Delivery]) -> list[Result]:
        if not deliveries:
            return []
        return await asyncio.to_thread(self._send_all, deliveries)

    async def close(self) -> None:
        return None

    def _send_all(self, ds: list[Delivery]) -> list[Result]:
        results: list[Result | None] = [None] * len(ds)
        groups: dict[bool, list[int]] = {True: [], False: []}
        for i, d in enumerate(ds):
            try:
                self._check(d)
            except DeliveryError as err:
                results[i] = err
                continue
            size = len(d.text.encode()) + len((d.html or "").encode())
            if size > MAX_SUBSTITUTION_BYTES - 200:
                self._send(ds, [i], results, inline=True)
            else:
                groups[bool(d.html)].append(i)
        for idx in groups.values():
            for k in range(0, len(idx), self.max_batch):
                self._send(ds, idx[k:k + self.max_batch], results, inline=False)
        return [r if r is not None else Retryable("not attempted") for r in results]

    def _check(self, d: Delivery) -> None:
        check_header("from", self._sender)
        check_email_address(d.address)
        check_header("subject", d.subject)
        check_header("delivery_id", d.delivery_id)
        check_header("notification_id", d.notification_id)
        check_body("text", d.text)
        check_body("html", d.html)

    def _send(self, ds: list[Delivery], idx: list[int], results: list[Result | None], inline: bool) -> None:
        for _ in range(MAX_ROUNDS):
            if not idx:
                return
            try:
                resp = self._sg.client.mail.send.post(request_body=self._body([ds[i] for i in idx], inline))
            except HTTPError as exc:
                bad = _bad_personalizations(exc) if exc.status_code == 400 else {}
                bad = {j: why for j, why in bad.items() if j < len(idx)}
                if not bad:
                    err = _map_http_error(exc)
                    for i in idx:
                        results[i] = err
                    return
                for j, (field, message) in bad.items():
                    address = ds[idx[j]].address
                    results[idx[j]] = (InvalidAddress(f"sendgrid 400: invalid address {address}: {message}")
                                       if _is_address_field(field) else Permanent(f"sendgrid 400: {field}: {message}"))
                idx = [i for j, i in enumerate(idx) if j not in bad]
                continue
            except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as exc:
                for i in idx:
                    results[i] = Retryable(f"sendgrid unreachable: {exc}")
                return
            except Exception as exc:  # noqa: BLE001 - this request only: the others of the batch keep their results
                for i in idx:
                    results[i] = Retryable(f"sendgrid: unexpected error: {exc!r}")
                return
            message_id = resp.headers.get("X-Message-Id") or ""
            for i in idx:
                results[i] = Sent(message_id)
            return
        for i in idx:
            results[i] = Retryable(f"sendgrid 400 {MAX_ROUNDS} times, each for other personalizations: not sent yet")

    def _body(self, ds: list[Delivery], inline: bool) -> dict[str, Any]:
        text_tag, html_tag = ("", "") if inline else _tags(ds)
        pers = []
        for d in ds:
            p: dict[str, Any] = {
                "to": [{"email": d.address}],
                "subject": d.subject or "",
                "custom_args": {SENDGRID_DELIVERY_ARG: d.delivery_id, SENDGRID_NOTIFICATION_ARG: d.notification_id},
            }
            if self._unsubscribe is not None and (headers := self._unsubscribe.headers(d.user_id, d.category)):
                p["headers"] = headers   # RFC 8058 one-click unsubscribe, per recipient
            if not inline:
                subs = {text_tag: d.text}
                if d.html:
                    subs[html_tag] = d.html
                p["substitutions"] = subs
            pers.append(p)
        first = ds[0]
        if inline:
            content = [{"type": "text/plain", "value": first.text}]
            if first.html:
                content.append({"type": "text/html", "value": first.html})
        else:
            content = [{"type": "text/plain", "value": text_tag}]
            if first.html:
                content.append({"type": "text/html", "value": html_tag})
        return {"personalizations": pers, "from": self._from, "content": content}


def _tags(ds: list[Delivery]) -> tuple[str, str]:
    """Text and HTML tags that occur nowhere in what SendGrid will scan for them (a NUL joins: no tag holds one)."""
    blob = "\x00".join(v for d in ds for v in (d.subject or "", d.text, d.html or "",
                                                 d.delivery_id, d.notification_id))
    for _ in range(100):
        nonce = secrets.token_hex(8)
        text_tag, html_tag = f"-herald-{nonce}-text-", f"-herald-{nonce}-html-"
        if text_tag not in blob and html_tag not in blob:
            return text_tag, html_tag
    raise RuntimeError("no substitution tag free of the content after 100 random draws")  # 2^-64 each


def _is_address_field(field: str) -> bool:
    return ".to." in field or field.endswith((".to", ".email"))


def _bad_personalizations(exc: HTTPError) -> dict[int, tuple[str, str]]:
    """Personalization index → (field, message) of each error SendGrid tied to one personalization."""
    try:
        errors = json.loads(exc.body or b"{}").get("errors", [])
    except (ValueError, AttributeError):
        return {}
    found: dict[int, tuple[str, str]] = {}
    for e in errors if isinstance(errors, list) else []:
        field = str(e.get("field") or "") if isinstance(e, dict) else ""
        m = _FIELD.match(field)
        if m:
            found.setdefault(int(m.group(1)), (field, str(e.get("message") or "")[:200]))
    return found


def _map_http_error(exc: HTTPError) -> Result:
    status = exc.status_code
    text = (exc.body or b"")[:300]
    if status == 429:
        return RateLimited(f"sendgrid 429: {text!r}", parse_retry_after(exc.headers.get("Retry-After") if exc.headers else None))
    if status >= 500:
        return Retryable(f"sendgrid {status}: {text!r}")
    if status in (401, 403):   # the API key: wrong, revoked, without the mail.send scope, or the account out of credits
        return ProviderRejected(f"sendgrid {status}: {text!r}")
    return Permanent(f"sendgrid {status}: {text!r}")
