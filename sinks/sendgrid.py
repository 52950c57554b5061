"""SendGrid sink: the real ``sendgrid`` SDK, up to 1000 personalizations per v3 mail/send request.

Every delivery carries its own rendered text, so one request batches them with
per-personalization ``subject`` and ``substitutions`` (the content holds only
the tags). A delivery too large for substitutions (SendGrid allows 10 000
bytes per personalization) goes in a request of its own.

SendGrid rejects a whole request for one bad address (400, with
``personalizations.N...`` in the error's field): those deliveries become
Permanent and the rest are sent again once without them.
"""
from __future__ import annotations

import asyncio
import re
import socket
import urllib.error
from email.utils import parseaddr
from typing import Any

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from sinks.base import Delivery, Result, Sent, parse_retry_after
from sinks.errors import InvalidAddress, Permanent, RateLimited, Retryable

TEXT_TAG, HTML_TAG = "-herald-text-", "-herald-html-"
MAX_SUBSTITUTION_BYTES = 10_000
_FIELD = re.compile(r"^personalizations\.(\d+)\.")


class SendGridSink:
    provider = "sendgrid"
    channel = "email"
    max_batch = 1000

    def __init__(self, api_key: str, host: str, sender: str, timeout: float = 30.0) -> None:
        self._sg = SendGridAPIClient(api_key, host=host)
        self._sg.client.timeout = timeout
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
            size = len(d["text"].encode()) + len((d.get("html") or "").encode())
            if size > MAX_SUBSTITUTION_BYTES - 200:
                self._send(ds, [i], results, inline=True)
            else:
                groups[bool(d.get("html"))].append(i)
        for idx in groups.values():
            for k in range(0, len(idx), self.max_batch):
                self._send(ds, idx[k:k + self.max_batch], results, inline=False)
        return [r if r is not None else Retryable("not attempted") for r in results]

    def _send(self, ds: list[Delivery], idx: list[int], results: list[Result | None], inline: bool,
              second_try: bool = False) -> None:
        body = self._body([ds[i] for i in idx], inline)
        try:
            resp = self._sg.client.mail.send.post(request_body=body)
        except HTTPError as exc:
            bad = _bad_personalizations(exc) if exc.status_code == 400 else set()
            if bad and not second_try:
                for j in bad:
                    results[idx[j]] = InvalidAddress(f"sendgrid 400: invalid address {ds[idx[j]]['address']}")
                rest = [i for j, i in enumerate(idx) if j not in bad]
                if rest:
                    self._send(ds, rest, results, inline, second_try=True)
                return
            err = _map_http_error(exc)
            for i in idx:
                results[i] = err
            return
        except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as exc:
            for i in idx:
                results[i] = Retryable(f"sendgrid unreachable: {exc}")
            return
        message_id = resp.headers.get("X-Message-Id") or ""
        for i in idx:
            results[i] = Sent(message_id)

    def _body(self, ds: list[Delivery], inline: bool) -> dict[str, Any]:
        pers = []
        for d in ds:
            p: dict[str, Any] = {
                "to": [{"email": d["address"]}],
                "subject": d.get("subject") or "",
                "custom_args": {"delivery_id": d["delivery_id"], "notification_id": d["notification_id"]},
            }
            if not inline:
                subs = {TEXT_TAG: d["text"]}
                if d.get("html"):
                    subs[HTML_TAG] = d["html"]
                p["substitutions"] = subs
            pers.append(p)
        first = ds[0]
        if inline:
            content = [{"type": "text/plain", "value": first["text"]}]
            if first.get("html"):
                content.append({"type": "text/html", "value": first["html"]})
        else:
            content = [{"type": "text/plain", "value": TEXT_TAG}]
            if first.get("html"):
                content.append({"type": "text/html", "value": HTML_TAG})
        return {"personalizations": pers, "from": self._from, "content": content}


def _bad_personalizations(exc: HTTPError) -> set[int]:
    import json

    try:
        errors = json.loads(exc.body or b"{}").get("errors", [])
    except (ValueError, AttributeError):
        return set()
    found = set()
    for e in errors:
        m = _FIELD.match(e.get("field") or "")
        if m:
            found.add(int(m.group(1)))
    return found


def _map_http_error(exc: HTTPError) -> Result:
    status = exc.status_code
    text = (exc.body or b"")[:300]
    if status == 429:
        return RateLimited(f"sendgrid 429: {text!r}", parse_retry_after(exc.headers.get("Retry-After") if exc.headers else None))
    if status >= 500:
        return Retryable(f"sendgrid {status}: {text!r}")
    return Permanent(f"sendgrid {status}: {text!r}")
