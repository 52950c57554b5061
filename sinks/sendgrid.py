"""SendGrid sink: the real ``sendgrid`` SDK, up to 1000 personalizations per v3 mail/send request.

Every delivery carries its own rendered text, so one request batches them with
per-personalization ``subject`` and ``substitutions`` (the content holds only
the tags). SendGrid substitutes tags in the subject, the content and the
custom args, and a substituted value may itself be scanned for tags, so the
tags of each request are random and checked to occur nowhere in that
request's subjects, texts, HTML or custom args: no template output can be
taken for a tag. A delivery too large for substitutions (SendGrid allows
10 000 bytes per personalization) goes in a request of its own.

Deliveries of a campaign chunk that carried the template's parts once
(``Delivery.shared``, DeliveryChunk v2) go as one request whatever their size:
the content is those parts with a tag in each per-recipient slot, and each
personalization substitutes only its own slot values (a 30 KB newsletter to
1000 recipients is one request, not 1000).

Outcomes are per delivery: one that cannot be carried (a subject with CR/LF,
an address that is not one mailbox, see ``sinks.content``) is left out of the
request as its own Permanent result. SendGrid rejects a whole request for one
bad personalization (400, with ``personalizations.N...`` in the error's
field): those deliveries become InvalidAddress (an address field) or Permanent
and the rest are sent again without them.

A request's JSON is written as text, each string escaped once (``json.encoder.encode_basestring_ascii``, what
``json.dumps`` does to every string): a thousand personalizations as dictionaries, then dumped, cost three times as
much, and the SDK is handed the text with a JSON content type it passes on as it is (``RequestBody``).
"""
from __future__ import annotations

import asyncio
import json
import re
import secrets
import urllib.error
from collections.abc import Callable
from email.utils import parseaddr
from functools import lru_cache, partial
from json.encoder import encode_basestring_ascii as _q

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from infra.unsubscribe import Unsubscribe
from schemas.records import Delivery, SharedContent
from schemas.vocabulary import SENDGRID_DELIVERY_ARG, SENDGRID_NOTIFICATION_ARG, Channel
from sinks.base import Result, Sent, parse_retry_after
from sinks.content import check_body, check_email_address, check_header
from sinks.errors import DeliveryError, InvalidAddress, Permanent, ProviderRejected, RateLimited, Retryable

MAX_SUBSTITUTION_BYTES = 10_000
MAX_ROUNDS = 3   # requests per group: the first, and again without the personalizations SendGrid named
_FIELD = re.compile(r"^personalizations\.(\d+)\.")
# not exactly "application/json": the SDK then sends the body as given instead of dumping it again
JSON_UTF8 = "application/json; charset=utf-8"
_ARGS = f"{_q(SENDGRID_DELIVERY_ARG)}:", f",{_q(SENDGRID_NOTIFICATION_ARG)}:"   # the custom args' names, as JSON


class RequestBody(str):
    """A request's JSON text as the SDK takes it. Its bytes format as their length: the SDK's HTTP client formats
    every payload into a debug message, logged or not, which cost as much as writing the JSON (the repr of ~200 kB)."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return _Payload(str.encode(self, encoding, errors))


class _Payload(bytes):
    def __format__(self, spec: str) -> str:
        return f"<{len(self)} bytes of JSON>"


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
        shared: dict[tuple[SharedContent, bool], list[int]] = {}
        clean: dict[int, bool] = {}   # per shared content (by identity): its pieces hold no refused character
        for i, d in enumerate(ds):
            try:
                self._check(d, clean)
            except DeliveryError as err:
                results[i] = err
                continue
            if d.shared is not None and _shared_size(d, d.shared) <= MAX_SUBSTITUTION_BYTES - 200:
                shared.setdefault((d.shared, bool(d.html)), []).append(i)
                continue
            size = len(d.text.encode()) + len((d.html or "").encode())
            if size > MAX_SUBSTITUTION_BYTES - 200:
                self._send(ds, [i], results, lambda sub: self._body(sub, inline=True))
            else:
                groups[bool(d.html)].append(i)
        for (content, _), idx in shared.items():
            for k in range(0, len(idx), self.max_batch):
                self._send(ds, idx[k:k + self.max_batch], results, partial(self._shared_body, content=content))
        for idx in groups.values():
            for k in range(0, len(idx), self.max_batch):
                self._send(ds, idx[k:k + self.max_batch], results, lambda sub: self._body(sub, inline=False))
        return [r if r is not None else Retryable("not attempted") for r in results]

    def _check(self, d: Delivery, clean: dict[int, bool]) -> None:
        check_header("from", self._sender)
        check_email_address(d.address)
        check_header("subject", d.subject)
        check_header("delivery_id", d.delivery_id)
        check_header("notification_id", d.notification_id)
        content = d.shared
        if content is not None:
            # a refused character is one character: the shared pieces are scanned once per chunk, then each
            # recipient's values; only when something is found is the whole body scanned, for its exact message
            if (ok := clean.get(id(content))) is None:
                ok = clean[id(content)] = all(_body_ok(p) for part in (content.text, content.html) if part for p in part)
            # the subject's values are in slot_values too: checking them as body text too only repeats a header check
            if ok and _body_ok("".join(d.slot_values)) and (content.text is not None or _body_ok(d.text)) and (
                    content.html is not None or _body_ok(d.html)):
                return
        check_body("text", d.text)
        check_body("html", d.html)

    def _send(self, ds: list[Delivery], idx: list[int], results: list[Result | None],
              body: Callable[[list[Delivery]], str]) -> None:
        for _ in range(MAX_ROUNDS):
            if not idx:
                return
            try:
                resp = self._sg.client.mail.send.post(request_body=body([ds[i] for i in idx]),
                                                      request_headers={"Content-Type": JSON_UTF8})
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
            sent = Sent(resp.headers.get("X-Message-Id") or "")   # one request, one message id: one result object
            for i in idx:
                results[i] = sent
            return
        for i in idx:
            results[i] = Retryable(f"sendgrid 400 {MAX_ROUNDS} times, each for other personalizations: not sent yet")

    def _personalization(self, d: Delivery, substitutions: str | None) -> str:
        """One personalization's JSON; ``substitutions``: the members of its substitutions object, already JSON."""
        delivery_arg, notification_arg = _ARGS
        head = (f'{{"to":[{{"email":{_q(d.address)}}}],"subject":{_q(d.subject or "")},"custom_args":{{'
                f'{delivery_arg}{_q(d.delivery_id)}{notification_arg}{_q(d.notification_id)}}}')
        if self._unsubscribe is not None and (headers := self._unsubscribe.headers(d.user_id, d.category)):
            # RFC 8058 one-click unsubscribe, per recipient
            head += ',"headers":{' + ",".join(f"{_q(name)}:{_q(value)}" for name, value in headers.items()) + "}"
        return f'{head},"substitutions":{{{substitutions}}}}}' if substitutions is not None else head + "}"

    def _request(self, personalizations: list[str], content: list[tuple[str, str]]) -> RequestBody:
        parts = ",".join(f'{{"type":{_q(kind)},"value":{_q(value)}}}' for kind, value in content)
        return RequestBody(f'{{"personalizations":[{",".join(personalizations)}],"from":{json.dumps(self._from)},'
                           f'"content":[{parts}]}}')

    def _body(self, ds: list[Delivery], inline: bool) -> str:
        first = ds[0]
        if inline:
            content = [("text/plain", first.text)]
            if first.html:
                content.append(("text/html", first.html))
            return self._request([self._personalization(d, None) for d in ds], content)
        text_tag, html_tag = _tags(ds)
        text_key, html_key = _q(text_tag), _q(html_tag)
        pers = []
        for d in ds:
            subs = f"{text_key}:{_q(d.text)}"
            if d.html:
                subs += f",{html_key}:{_q(d.html)}"
            pers.append(self._personalization(d, subs))
        content = [("text/plain", text_tag)]
        if first.html:
            content.append(("text/html", html_tag))
        return self._request(pers, content)

    def _shared_body(self, ds: list[Delivery], content: SharedContent) -> str:
        """One request for deliveries filled from the same shared parts: the content is those parts with a tag in
        each slot (a part the content lacks: one tag for the whole of it), each personalization's substitutions are
        its own slot values (and whole parts); the subject stays per personalization."""
        prefix = _free_prefix(ds, content)
        html = bool(ds[0].html)
        layout = _layout(content)
        templates: list[str] = []
        # per part: where its values are in slot_values (None: the whole part is one value) and its tags, as JSON
        slots: list[tuple[str, tuple[int, int] | None, list[str]]] = []
        for part, pieces, at in (("text", content.text, layout[1]), ("html", content.html, layout[2])):
            if part == "html" and not html:
                continue
            if pieces is None:
                templates.append(f"{prefix}{part}-")
                slots.append((part, None, [_q(f"{prefix}{part}-")]))
                continue
            out = [pieces[0]]
            for j, piece in enumerate(pieces[1:]):
                out += (f"{prefix}{part[0]}{j}-", piece)
            templates.append("".join(out))
            assert at is not None
            slots.append((part, at, [_q(f"{prefix}{part[0]}{j}-") for j in range(at[1] - at[0])]))
        pers = []
        for d in ds:
            subs: list[str] = []
            for part, at, tags in slots:
                if at is None:
                    subs.append(f"{tags[0]}:{_q((d.text if part == 'text' else d.html) or '')}")
                else:
                    subs += [f"{tag}:{_q(value)}" for tag, value in zip(tags, d.slot_values[at[0]:at[1]], strict=True)]
            pers.append(self._personalization(d, ",".join(subs)))
        parts = [("text/plain", templates[0])]
        if html:
            parts.append(("text/html", templates[1]))
        return self._request(pers, parts)


@lru_cache(maxsize=64)
def _layout(content: SharedContent) -> list[tuple[int, int] | None]:
    """Where each part's slot values are in a delivery's ``slot_values`` (subject, text, html): None for a part the
    content does not hold."""
    out: list[tuple[int, int] | None] = []
    at = 0
    for pieces in content.parts():
        if pieces is None:
            out.append(None)
            continue
        out.append((at, at + len(pieces) - 1))
        at += len(pieces) - 1
    return out


def _shared_size(d: Delivery, content: SharedContent) -> int:
    """Bytes of the substitutions ``_shared_body`` gives this delivery (a tag is at most 40 bytes)."""
    subject, text, html = _layout(content)
    body = d.slot_values[subject[1] if subject is not None else 0:]   # the text's and the html's values
    size = 40 * len(body) + len("".join(body).encode())
    if text is None:
        size += 40 + len(d.text.encode())
    if html is None:
        size += 40 + len((d.html or "").encode())
    return size


def _body_ok(value: str | None) -> bool:
    try:
        check_body("", value)
    except DeliveryError:
        return False
    return True


def _free_prefix(ds: list[Delivery], content: SharedContent) -> str:
    """A tag prefix that occurs nowhere in what SendGrid will scan (every tag starts with it, so none occurs): the
    pieces, and per recipient its subject, ids, slot values and the parts the content does not hold."""
    scanned = [piece for pieces in content.parts() if pieces for piece in pieces]
    for d in ds:
        scanned += (d.subject or "", d.delivery_id, d.notification_id, *d.slot_values)
        if content.text is None:
            scanned.append(d.text)
        if content.html is None:
            scanned.append(d.html or "")
    blob = "\x00".join(scanned)
    for _ in range(100):
        prefix = f"-herald-{secrets.token_hex(8)}-"
        if prefix not in blob:
            return prefix
    raise RuntimeError("no substitution tag free of the content after 100 random draws")  # 2^-64 each


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
