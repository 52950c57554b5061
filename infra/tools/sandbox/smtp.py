"""The SMTP sink of the sandbox (aiosmtpd), served on the sandbox's event loop."""
from __future__ import annotations

import functools
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from infra.tools.sandbox.state import SandboxState


class SandboxSmtpHandler:
    def __init__(self, state: SandboxState) -> None:
        self.state = state

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        # aiosmtpd reads commands line by line, so a pipelined group (RFC 2920) is served in order: say so, as
        # Postfix and the hosted providers do, so that Herald's sink sends MAIL, RCPT and DATA in one write
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.state.faults["smtp"].invalid_addresses or "@" not in address:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        verdict = await self.state.enter("smtp", list(envelope.rcpt_tos))
        if verdict.status == 429:
            return "451 4.7.1 rate limited, try again later"
        if verdict.status:
            return "451 4.3.0 temporary failure"
        raw = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        for rcpt in envelope.rcpt_tos:
            # parsed when the inbox is read, not here: policy.default's parser costs about a millisecond a message
            self.state.record("smtp", {"to": rcpt, "from": envelope.mail_from}, later=functools.partial(_fields, raw))
        return "250 OK queued"


def _fields(raw: bytes) -> dict[str, Any]:
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    return {
        "subject": str(msg.get("Subject", "")),
        "text": text.get_content() if text is not None else "",
        "html": html.get_content() if html is not None else None,
        "message_id": str(msg.get("Message-ID", "")),
        "delivery_id": str(msg.get("X-Herald-Delivery-Id", "")),
        "headers": {name: str(value) for name, value in msg.items()},   # unfolded (List-Unsubscribe...)
    }


def smtp_factory(state: SandboxState):
    handler = SandboxSmtpHandler(state)

    def make() -> SMTP:
        return SMTP(handler, hostname="sandbox.herald.local", ident="Herald sandbox SMTP")

    return make
