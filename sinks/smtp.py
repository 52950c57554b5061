"""SMTP sink: a few kept-alive connections, each sending its part of a chunk in a worker thread.

smtplib is blocking and speaks one message at a time (a few round trips each),
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
            results: list[Result] = []
            for i, d in enumerate(deliveries):
                try:
                    results.append(self._send_one(d))
                except _ConnectionLost as exc:
                    # the connection is gone: this one and the rest are worth another attempt
                    results += [Retryable(f"smtp connection: {exc}")] * (len(deliveries) - i)
                    break
                except _AccountRefused as exc:   # the server refused Herald's login: none of them can go here
                    results += [ProviderRejected(f"smtp: {exc}")] * (len(deliveries) - i)
                    break
                except Exception as exc:  # noqa: BLE001 - one delivery's surprise must not fail the chunk
                    self._drop()
                    results.append(Permanent(f"smtp: unexpected error for this message: {exc!r}"))
            return results

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
