"""The HTTP side of the sandbox: SendGrid v3, Twilio Messages and FCM HTTP v1 (with its OAuth token endpoint).

One aiohttp application serves every provider path plus the control API
(``/_sandbox/...``); the sandbox listens with it on each provider's port so that
each SDK's base URL can point at "its" server.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, web
from twilio.request_validator import RequestValidator

from infra.tools.sandbox.state import SandboxState, new_id

STATE = web.AppKey("state", SandboxState)
log = logging.getLogger("herald.sandbox")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def build_app(state: SandboxState) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = state
    app.router.add_post("/v3/mail/send", sendgrid_send)
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", twilio_send)
    app.router.add_post("/token", fcm_token)
    app.router.add_post("/v1/projects/{project}/messages:send", fcm_send)
    app.router.add_get("/_sandbox/inbox", inbox)
    app.router.add_delete("/_sandbox/inbox", clear_inbox)
    app.router.add_get("/_sandbox/faults", get_faults)
    app.router.add_post("/_sandbox/faults", post_faults)
    app.router.add_delete("/_sandbox/faults", delete_faults)
    return app


# --- control -------------------------------------------------------------------
async def inbox(request: web.Request) -> web.Response:
    state = request.app[STATE]
    q = request.query
    if "summary" in q:   # a count, without copying a million messages per poll
        count = state.count(q.get("channel"), q.get("to"))
        return web.json_response({"count": count, "requests": state.requests, "held": state.held, "messages": []})
    messages = state.inbox(q.get("channel"), q.get("to"), envelope="envelope" in q)
    return web.json_response({"count": len(messages), "requests": state.requests, "held": state.held,
                              "messages": messages})


async def clear_inbox(request: web.Request) -> web.Response:
    request.app[STATE].clear()
    return web.json_response({"cleared": True})


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].faults_view())


async def post_faults(request: web.Request) -> web.Response:
    """Body: ``{"provider": "sendgrid", "storm": -1, ...}``; fields not named keep their value."""
    try:
        body = await request.json()
        provider = body.pop("provider")
        faults = request.app[STATE].set_faults(provider, body)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return web.json_response({"error": f"bad fault request: {exc}"}, status=400)
    return web.json_response({"provider": provider, **faults.__dict__})


async def delete_faults(request: web.Request) -> web.Response:
    request.app[STATE].clear_faults()
    return web.json_response({"cleared": True})


# --- SendGrid v3 mail/send ------------------------------------------------------------
def _sg_error(status: int, message: str, field: str | None = None) -> web.Response:
    return web.json_response({"errors": [{"message": message, "field": field, "help": None}]}, status=status)


async def sendgrid_send(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not request.headers.get("Authorization", "").startswith("Bearer "):
        return _sg_error(401, "The provided authorization grant is invalid, expired, or revoked")
    try:
        body = await request.json()
        pers = body["personalizations"]
        sender = body["from"]["email"]
    except (ValueError, KeyError, TypeError):
        return _sg_error(400, "Bad Request: personalizations and from are required")
    if not isinstance(pers, list) or not 1 <= len(pers) <= 1000:
        return _sg_error(400, "The personalizations field must have between 1 and 1000 items", "personalizations")
    addresses = [t.get("email", "") for p in pers for t in p.get("to", [])]
    verdict = await state.enter("sendgrid", addresses)
    if verdict.status:
        return _fault_response(verdict, {"errors": [{"message": "sandbox fault", "field": None}]})
    bad = state.faults["sendgrid"].invalid_addresses
    errors = [
        {"message": "Does not contain a valid address.", "field": f"personalizations.{i}.to.{j}.email", "help": None}
        for i, p in enumerate(pers) for j, t in enumerate(p.get("to", []))
        if not _EMAIL.match(t.get("email", "")) or t.get("email") in bad
    ]
    if errors:
        return web.json_response({"errors": errors}, status=400)
    content = {c["type"]: c["value"] for c in body.get("content", [])}
    message_id = new_id()[:22]
    for p in pers:
        # the substitutions are made when the message is first read: a campaign's thousand recipients per request
        # cost the sandbox little more than the JSON it parsed (it stands in for SendGrid's servers in the benches)
        def made(p: dict[str, Any] = p) -> dict[str, Any]:
            subs = p.get("substitutions") or {}
            return {"subject": _subst(p.get("subject") or body.get("subject") or "", subs),
                    "text": _subst(content.get("text/plain", ""), subs),
                    "html": _subst(content.get("text/html", ""), subs) or None,
                    "custom_args": {k: _subst(str(v), subs) for k, v in (p.get("custom_args") or {}).items()},
                    "headers": {**(body.get("headers") or {}), **(p.get("headers") or {})}}

        for t in p.get("to", []):
            state.record("sendgrid", {"to": t["email"], "from": sender, "message_id": message_id}, later=made)
    return web.Response(status=202, headers={"X-Message-Id": message_id})


def _subst(text: str, subs: dict[str, str]) -> str:
    """As SendGrid: tags are replaced in the subject, the content and the custom args, one tag after another,
    so a value put in for one tag is scanned for the tags after it (the harshest reading, for the tests)."""
    for k, v in subs.items():
        text = text.replace(k, v)
    return text


# --- Twilio Messages ----------------------------------------------------------
def _twilio_error(status: int, code: int, message: str, retry_after: float | None = None) -> web.Response:
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
    return web.json_response({"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
                              "status": status}, status=status, headers=headers)


async def twilio_send(request: web.Request) -> web.Response:
    state = request.app[STATE]
    sid = request.match_info["sid"]
    if request.headers.get("Authorization", "")[:6] != "Basic " or sid in state.faults["twilio"].refused_accounts:
        return _twilio_error(401, 20003, "Authenticate")
    form = await request.post()
    to, from_, body = form.get("To", ""), form.get("From", ""), form.get("Body", "")
    verdict = await state.enter("twilio", [str(to)])
    if verdict.status == 429:
        return _twilio_error(429, 20429, "Too Many Requests", verdict.retry_after)
    if verdict.status:
        return _twilio_error(verdict.status, 20500, "Internal Server Error")
    if not _E164.match(str(to)) or to in state.faults["twilio"].invalid_numbers:
        return _twilio_error(400, 21211, f"The 'To' number {to!s} is not a valid phone number.")
    if not body:
        return _twilio_error(400, 21602, "Message body is required.")
    if len(str(body)) > 1600:
        return _twilio_error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
    msid = "SM" + new_id()
    state.record("twilio", {"to": to, "from": from_, "text": body, "message_id": msid})
    callback = form.get("StatusCallback")
    if callback:
        task = asyncio.get_running_loop().create_task(
            twilio_status_callbacks(state, str(callback), {"MessageSid": msid, "SmsSid": msid, "AccountSid": sid,
                                                           "To": str(to), "From": str(from_), "ApiVersion": "2010-04-01"},
                                    "undelivered" if to in state.faults["twilio"].undelivered_numbers else "delivered"))
        state.background.add(task)
        task.add_done_callback(state.background.discard)
    return web.json_response({
        "sid": msid, "account_sid": sid, "to": to, "from": from_, "body": body, "status": "queued",
        "num_segments": "1", "direction": "outbound-api", "api_version": "2010-04-01",
        "date_created": None, "date_sent": None, "date_updated": None, "error_code": None, "error_message": None,
        "price": None, "price_unit": "USD", "uri": f"/2010-04-01/Accounts/{sid}/Messages/{msid}.json",
    }, status=201)


async def twilio_status_callbacks(state: SandboxState, url: str, fields: dict[str, str], final: str = "delivered") -> None:
    """What Twilio does with a message's StatusCallback: POST 'sent', then ``final`` ('delivered', or 'undelivered'
    with the carrier's error 30003), each form signed with the account's auth token (X-Twilio-Signature, HMAC-SHA1
    over the URL and the sorted fields)."""
    validator = RequestValidator(state.twilio_auth_token)
    async with ClientSession(timeout=ClientTimeout(total=10)) as http:
        for status in ("sent", final):
            await asyncio.sleep(0.05)
            form = {**fields, "MessageStatus": status, "SmsStatus": status}
            if status == "undelivered":
                form["ErrorCode"] = "30003"
            try:
                async with http.post(url, data=form, headers={"X-Twilio-Signature": validator.compute_signature(url, form)}):
                    pass
            except (ClientError, OSError, TimeoutError) as exc:   # Twilio gives up on a dead callback URL too
                log.warning("twilio status callback to %s failed: %r", url, exc)
                return


# --- FCM HTTP v1 + OAuth --------------------------------------------------------
async def fcm_token(request: web.Request) -> web.Response:
    form = await request.post()
    if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" or not form.get("assertion"):
        return web.json_response({"error": "invalid_grant", "error_description": "expected a JWT bearer assertion"},
                                 status=400)
    return web.json_response({"access_token": "ya29.sandbox-" + new_id(), "expires_in": 3600, "token_type": "Bearer"})


def _fcm_error(status: int, state_name: str, message: str, code: str | None = None,
               retry_after: float | None = None) -> web.Response:
    details = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}] if code else []
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
    return web.json_response({"error": {"code": status, "message": message, "status": state_name, "details": details}},
                             status=status, headers=headers)


async def fcm_send(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not request.headers.get("Authorization", "").startswith("Bearer "):
        return _fcm_error(401, "UNAUTHENTICATED", "Request is missing required authentication credential.")
    try:
        msg: dict[str, Any] = (await request.json())["message"]
    except (ValueError, KeyError, TypeError):
        return _fcm_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
    token = str(msg.get("token", ""))
    verdict = await state.enter("fcm", [token])
    if verdict.status == 429:
        return _fcm_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", "QUOTA_EXCEEDED", verdict.retry_after)
    if verdict.status:
        return _fcm_error(verdict.status, "UNAVAILABLE" if verdict.status == 503 else "INTERNAL", "The service is unavailable.",
                          "UNAVAILABLE" if verdict.status == 503 else "INTERNAL")
    if token in state.faults["fcm"].unregistered_tokens:
        return _fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
    if not token or len(token) < 8:
        return _fcm_error(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token",
                          "INVALID_ARGUMENT")
    name = f"projects/{request.match_info['project']}/messages/{new_id()[:16]}"
    note = msg.get("notification") or {}
    state.record("fcm", {"to": token, "title": note.get("title"), "text": note.get("body"),
                         "data": msg.get("data") or {}, "message_id": name})
    return web.json_response({"name": name})


def _fault_response(verdict, body: dict[str, Any]) -> web.Response:
    headers = {"Retry-After": f"{verdict.retry_after:g}"} if verdict.retry_after is not None else None
    return web.Response(status=verdict.status, body=json.dumps(body), content_type="application/json", headers=headers)
