"""SMTP sink: a few kept-alive connections, each sending its part of a chunk in a worker thread.

smtplib is blocking and speaks one message at a time (four round trips each, two
when the server offers PIPELINING: MAIL, RCPT and DATA go in one write, RFC 2920),
so one connection tops out near 200 messages/s; a chunk is split over
``connections`` connections that send side by side, each in its own
``asyncio.to_thread`` call. A connection survives between batches and is
re-opened once when the server dropped it. SMTP reply codes map onto the taxonomy: 4xx → Retryable,
5xx on RCPT/DATA → Permanent (invalid address), connection trouble → Retryable.

Every outcome is per delivery: a message that cannot be built (a subject with
CR/LF, an address that is not one mailbox, see ``sinks.content``) is that
delivery's Permanent result, checked before the connection is touched, and the
rest of the chunk is sent.
"""
from __future__ import annotations

import asyncio
import contextlib
import re
import smtplib
import threading
from concurrent.futures import ThreadPoolExecutor
from email.utils import make_msgid
from typing import NamedTuple

from infra.unsubscribe import Unsubscribe
from schemas.records import Delivery
from schemas.vocabulary import Channel
from sinks import mime
from sinks.base import Result, Sent
from sinks.content import check_body, check_email_address, check_header
from sinks.errors import DeliveryError, InvalidAddress, Permanent, ProviderRejected, Retryable


class SmtpSink:
    provider = "smtp"
    channel = Channel.EMAIL

    def __init__(self, host: str, port: int, sender: str, username: str | None = None,
                 password: str | None = None, timeout: float = 10.0, max_batch: int = 200, connections: int = 4,
                 unsubscribe: Unsubscribe | None = None) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.max_batch = max_batch
        self._pool = [_Connection(host, port, sender, username, password, timeout, unsubscribe)
                      for _ in range(max(1, connections))]
        # threads of its own: the loop's default executor is shared with every other blocking call of the worker
        self._threads = ThreadPoolExecutor(len(self._pool), thread_name_prefix="smtp")

    async def send_batch(self, deliveries: list[Delivery]) -> list[Result]:
        """The chunk split in contiguous parts, one per connection, sent side by side; results in the chunk's order."""
        if not deliveries:
            return []
        n = min(len(self._pool), len(deliveries))
        size = -(-len(deliveries) // n)
        parts = [deliveries[i * size:(i + 1) * size] for i in range(n)]
        loop = asyncio.get_running_loop()
        done = await asyncio.gather(*(loop.run_in_executor(self._threads, conn.send_all, part)
                                      for conn, part in zip(self._pool, parts, strict=False) if part))
        return [result for results in done for result in results]

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._threads, conn.quit) for conn in self._pool))
        self._threads.shutdown(wait=False)


class _Connection:
    """One kept-alive SMTP connection, used by one thread at a time; re-opened once when the server dropped it."""

    def __init__(self, host: str, port: int, sender: str, username: str | None, password: str | None,
                 timeout: float, unsubscribe: Unsubscribe | None = None) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.unsubscribe = unsubscribe
        self.username, self.password = username, password
        self.timeout = timeout
        self._conn: smtplib.SMTP | None = None
        self._lock = threading.Lock()

    def send_all(self, deliveries: list[Delivery]) -> list[Result]:
        with self._lock:
            results: list[Result | None] = [None] * len(deliveries)
            i = 0
            while i < len(deliveries):
                if results[i] is not None:
                    i += 1
                    continue
                # a server that pipelines gets the messages streamed; what that stops at goes the careful way below
                if self._conn is not None and self._conn.has_extn("pipelining"):
                    try:
                        i = _Stream(self._conn, self.sender, deliveries, results, self.unsubscribe).run(i)
                    except _StreamBroken as exc:
                        self._drop()
                        i = exc.resume
                    if i >= len(deliveries):
                        break
                    if results[i] is not None:
                        continue
                try:
                    results[i] = self._send_one(deliveries[i])
                except _ConnectionLost as exc:
                    # the connection is gone: this one and the rest are worth another attempt
                    for j in range(i, len(deliveries)):
                        if results[j] is None:
                            results[j] = Retryable(f"smtp connection: {exc}")
                    break
                except _AccountRefused as exc:   # the server refused Herald's login: none of them can go here
                    results += [ProviderRejected(f"smtp: {exc}")] * (len(deliveries) - i)
                    break
                except Exception as exc:  # noqa: BLE001 - one delivery's surprise must not fail the chunk
                    self._drop()
                    results[i] = Permanent(f"smtp: unexpected error for this message: {exc!r}")
                i += 1
            assert all(r is not None for r in results)
            return results  # type: ignore[return-value]  # every slot filled (asserted)

    def _connection(self) -> smtplib.SMTP:
        if self._conn is None:
            try:
                conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
                conn.ehlo()
                if self.username:
                    if conn.has_extn("starttls"):
                        conn.starttls()
                        conn.ehlo()
                    conn.login(self.username, self.password or "")
            except smtplib.SMTPAuthenticationError as exc:
                conn.close()
                raise _AccountRefused(f"login to {self.host}:{self.port} refused: {exc.smtp_code} "
                                      f"{_text(exc.smtp_error)}") from exc
            except (OSError, smtplib.SMTPException) as exc:
                raise _ConnectionLost(f"connect to {self.host}:{self.port}: {exc}") from exc
            self._conn = conn
        return self._conn

    def _send_one(self, d: Delivery) -> Result:
        try:
            msg = build_message(d, self.sender, self.unsubscribe)
        except DeliveryError as err:
            return err
        except (ValueError, TypeError, LookupError) as exc:  # the email package refused a value
            return Permanent(f"smtp: message cannot be built: {exc}")
        for reconnect in (True, False):
            conn = self._connection()
            if not d.address.isascii() and not conn.has_extn("smtputf8"):
                return InvalidAddress(f"invalid address {d.address!r}: not ASCII, and the SMTP server "
                                      "does not offer SMTPUTF8")
            try:
                options = () if d.address.isascii() else ("SMTPUTF8",)
                if conn.has_extn("pipelining"):
                    refused = _pipelined(conn, _bare(self.sender), d.address, msg.raw, options)
                else:
                    refused = conn.sendmail(_bare(self.sender), [d.address], msg.raw, mail_options=options)
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = next(iter(exc.recipients.values()))
                return _by_code(code, text, "recipient refused", InvalidAddress)
            except smtplib.SMTPSenderRefused as exc:
                return _by_code(exc.smtp_code, exc.smtp_error, "sender refused")
            except smtplib.SMTPDataError as exc:
                return _by_code(exc.smtp_code, exc.smtp_error, "data refused")
            except smtplib.SMTPResponseException as exc:
                self._drop()
                if exc.smtp_code == 421:  # service closing the channel: temporary
                    return Retryable(f"smtp 421: {_text(exc.smtp_error)}")
                return _by_code(exc.smtp_code, exc.smtp_error, "smtp error")
            except smtplib.SMTPNotSupportedError as exc:  # raised before any command: the connection is fine
                return Permanent(f"smtp: {exc}")
            except (ValueError, TypeError, LookupError) as exc:  # flattening the message failed
                self._drop()
                return Permanent(f"smtp: message cannot be sent: {exc}")
            except (TimeoutError, smtplib.SMTPServerDisconnected, ConnectionError, OSError) as exc:
                self._drop()
                if reconnect:
                    continue
                raise _ConnectionLost(str(exc)) from exc
            if refused:
                code, text = next(iter(refused.values()))
                return _by_code(code, text, "recipient refused", InvalidAddress)
            return Sent(msg.message_id)
        raise _ConnectionLost("unreachable")

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()

    def quit(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(OSError, smtplib.SMTPException):
                    conn.quit()


class _ConnectionLost(Exception):
    pass


class _AccountRefused(Exception):
    pass


class _StreamBroken(Exception):
    """The connection failed mid-stream: ``resume`` is the first delivery whose outcome is not known."""

    def __init__(self, resume: int) -> None:
        super().__init__(resume)
        self.resume = resume


class _Stream:
    """Messages streamed over a connection that offers PIPELINING (RFC 2920): each write carries the previous
    message's content and the next message's MAIL, RCPT and DATA (content may lead a group), so a message costs one
    round trip, not four. Every reply is read and mapped to its own delivery, as ``sendmail``'s would be."""

    def __init__(self, conn: smtplib.SMTP, sender: str, deliveries: list[Delivery], results: list[Result | None],
                 unsubscribe: Unsubscribe | None = None) -> None:
        self.conn, self.sender, self.deliveries, self.results = conn, sender, deliveries, results
        self.unsubscribe = unsubscribe
        self.size = conn.has_extn("size")

    def run(self, start: int) -> int:
        """Send from ``start`` on; returns the index to go on from the careful way (a non-ASCII address, or a
        connection the server closed), or ``len(deliveries)`` when all are answered."""
        conn, results = self.conn, self.results
        body: tuple[int, Mail] | None = None   # the message whose DATA the server accepted: its content goes next
        reset = False                          # a refused envelope leaves a transaction to reset
        i = start
        for _ in range(2 * len(self.deliveries) + 2):   # bounded: every round answers one message or ends
            nxt, i = self._next(i)
            group: list[bytes] = []
            if body is not None:
                content = _LEADING_DOT.sub(b"..", body[1].raw)
                group.append(content + (b".\r\n" if content.endswith(b"\r\n") else b"\r\n.\r\n"))
            if nxt is not None:
                if reset:
                    group.append(b"RSET\r\n")
                params = f" SIZE={len(nxt[1].raw)}" if self.size else ""
                d = self.deliveries[nxt[0]]
                group.append(f"MAIL FROM:{smtplib.quoteaddr(_bare(self.sender))}{params}\r\n"
                             f"RCPT TO:{smtplib.quoteaddr(d.address)}\r\nDATA\r\n".encode("ascii"))
            if not group:
                return i
            unknown = body[0] if body is not None else nxt[0] if nxt is not None else i
            try:
                conn.send(b"".join(group))
                if body is not None:
                    code, text = conn.getreply()
                    results[body[0]] = Sent(body[1].message_id) if code == 250 else _by_code(code, text, "data refused")
                    if code == 421:
                        raise _StreamBroken(nxt[0] if nxt is not None else i)
                body = None
                if nxt is None:
                    return i
                unknown = nxt[0]
                if reset:
                    conn.getreply()
                    reset = False
                mail, rcpt, data = conn.getreply(), conn.getreply(), conn.getreply()
            except (TimeoutError, smtplib.SMTPServerDisconnected, ConnectionError, OSError) as exc:
                raise _StreamBroken(unknown) from exc
            k, msg = nxt
            if mail[0] == 250 and rcpt[0] in (250, 251) and data[0] == 354:
                body = (k, msg)
                continue
            if mail[0] != 250:
                results[k] = _by_code(mail[0], mail[1], "sender refused")
            elif rcpt[0] not in (250, 251):
                results[k] = _by_code(rcpt[0], rcpt[1], "recipient refused", InvalidAddress)
            else:
                results[k] = _by_code(data[0], data[1], "data refused")
            if data[0] == 354 or 421 in (mail[0], rcpt[0], data[0]):
                # waiting for content of a refused envelope, or closing: only a new connection ends that
                raise _StreamBroken(i)
            reset = True
        raise _StreamBroken(i)   # not reached: the bound covers two rounds per message

    def _next(self, i: int) -> tuple[tuple[int, Mail] | None, int]:
        """The next message to stream from ``i`` (those that cannot be built get their Permanent result and are
        passed), and the index after it; None at the end or at a non-ASCII address (the careful way's)."""
        while i < len(self.deliveries):
            d = self.deliveries[i]
            if self.results[i] is not None:
                i += 1
                continue
            if not d.address.isascii():
                return None, i
            try:
                return (i, build_message(d, self.sender, self.unsubscribe)), i + 1
            except DeliveryError as err:
                self.results[i] = err
            except (ValueError, TypeError, LookupError) as exc:
                self.results[i] = Permanent(f"smtp: message cannot be built: {exc}")
            i += 1
        return None, i


_LEADING_DOT = re.compile(rb"(?m)^\.")


def _pipelined(conn: smtplib.SMTP, sender: str, to: str, raw: bytes, options: tuple[str, ...]) -> dict[str, tuple[int, bytes]]:
    """``conn.sendmail`` in two round trips instead of four (RFC 2920, when the server offers PIPELINING): MAIL, RCPT
    and DATA in one write, then the message. Raises what ``sendmail`` raises for the same replies."""
    esmtp = [*options, f"SIZE={len(raw)}"] if conn.has_extn("size") else list(options)
    params = "".join(" " + o for o in esmtp)
    group = f"MAIL FROM:{smtplib.quoteaddr(sender)}{params}\r\nRCPT TO:{smtplib.quoteaddr(to)}\r\nDATA\r\n"
    conn.send(group.encode("utf-8" if options else "ascii"))
    mail = conn.getreply()
    if mail[0] == 421:   # the server is closing the channel: it may not answer the rest
        conn.close()
        raise smtplib.SMTPSenderRefused(mail[0], mail[1], sender)
    rcpt, data = conn.getreply(), conn.getreply()   # each command is answered, a refused MAIL's RCPT and DATA too
    if data[0] == 354 and (mail[0] != 250 or rcpt[0] not in (250, 251)):
        conn.close()   # the server waits for a message whose envelope it refused: only a new connection ends that
    elif mail[0] != 250 or rcpt[0] not in (250, 251) or data[0] != 354:
        _reset(conn)
    if mail[0] != 250:
        raise smtplib.SMTPSenderRefused(mail[0], mail[1], sender)
    if rcpt[0] not in (250, 251):
        raise smtplib.SMTPRecipientsRefused({to: rcpt})
    if data[0] != 354:
        raise smtplib.SMTPDataError(*data)
    body = _LEADING_DOT.sub(b"..", raw)
    conn.send(body + (b".\r\n" if body.endswith(b"\r\n") else b"\r\n.\r\n"))
    code, text = conn.getreply()
    if code != 250:
        if code == 421:
            conn.close()
        else:
            _reset(conn)
        raise smtplib.SMTPDataError(code, text)
    return {}


def _reset(conn: smtplib.SMTP) -> None:
    with contextlib.suppress(smtplib.SMTPServerDisconnected):
        conn.rset()


class Mail(NamedTuple):
    message_id: str
    raw: bytes


def build_message(d: Delivery, sender: str, unsubscribe: Unsubscribe | None = None) -> Mail:
    """The MIME bytes of one delivery; raises ``Permanent``/``InvalidAddress`` for a value it cannot carry.

    A delivery of an unsubscribable category (``unsubscribe.categories``: marketing) carries RFC 8058's
    ``List-Unsubscribe`` and ``List-Unsubscribe-Post`` headers."""
    check_header("from", sender)
    check_email_address(d.address)
    check_header("subject", d.subject)
    check_header("delivery_id", d.delivery_id)
    check_body("text", d.text)
    check_body("html", d.html)
    message_id = make_msgid(idstring=d.delivery_id[:32], domain="herald.local")
    return Mail(message_id, mime.render(sender=mime.address_header(sender), to=d.address, subject=d.subject or "",
                                        message_id=message_id, delivery_id=d.delivery_id, text=d.text, html=d.html,
                                        extra=unsubscribe.headers(d.user_id, d.category) if unsubscribe else None))


AUTH_REFUSED = (530, 534, 535)   # authentication required / mechanism too weak / credentials invalid


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _by_code(code: int, text: bytes | str, what: str, permanent: type[Permanent] = Permanent) -> Result:
    msg = f"smtp {code} {what}: {_text(text)}"
    if 400 <= code < 500:
        return Retryable(msg)
    if code in AUTH_REFUSED:
        return ProviderRejected(msg)
    return permanent(msg)


def _bare(sender: str) -> str:
    return sender.rsplit("<", 1)[-1].rstrip(">").strip() if "<" in sender else sender
