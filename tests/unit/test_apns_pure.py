"""The pure parts of the APNs sink: the provider token's renewal, the request it builds, the answers' mapping,
and the push dispatcher's routing by token format (no network)."""
from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from infra.settings import ApnsConfig, Settings
from schemas.records import Delivery
from schemas.vocabulary import Channel, Lane
from sinks.apns import ApnsSink, ExpiredToken, ProviderToken, build_request, is_apns_token, map_response
from sinks.base import Sent
from sinks.errors import InvalidAddress, InvalidToken, Permanent, RateLimited, Retryable
from sinks.factory import build_sink
from sinks.fcm import FcmSink
from sinks.memory import MemorySink
from sinks.push import PushSink
from tests.support.sandbox import delivery

APNS = "a1" * 32
FCM = "cXk7d9Yq" + ":APA91b" + "H" * 140


def _key() -> tuple[str, ec.EllipticCurvePublicKey]:
    k = ec.generate_private_key(ec.SECP256R1())
    pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return pem, k.public_key()


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# --- the provider token -----------------------------------------------------------------
def test_the_token_is_an_es256_jwt_with_kid_iss_and_iat_that_the_public_key_verifies():
    pem, public = _key()
    clock = Clock()
    token = ProviderToken(pem, "KEY1234567", "TEAM123456", clock=clock).current()
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": "KEY1234567", "typ": "JWT"}
    claims = jwt.decode(token, public, algorithms=["ES256"])
    assert claims == {"iss": "TEAM123456", "iat": int(clock.t)}
    other_public = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, other_public, algorithms=["ES256"])


def test_the_token_is_cached_and_renewed_at_fifty_minutes_well_before_apples_hour():
    pem, _ = _key()
    clock = Clock()
    pt = ProviderToken(pem, "K", "T", refresh_after=3000, clock=clock)
    first = pt.current()
    clock.t += 2999
    assert pt.current() == first and pt.issued == 1
    clock.t += 1
    second = pt.current()
    assert second != first and pt.issued == 2
    assert jwt.decode(second, options={"verify_signature": False})["iat"] == int(clock.t)
    with pytest.raises(ValueError):
        ProviderToken(pem, "K", "T", refresh_after=3600)


def test_renewing_after_an_expired_answer_makes_one_new_token_however_many_requests_saw_it():
    pem, _ = _key()
    clock = Clock()
    pt = ProviderToken(pem, "K", "T", clock=clock)
    stale = pt.current()
    fresh = pt.renew(stale)             # same second: still a new token (a later iat)
    assert fresh != stale and pt.issued == 2
    assert pt.renew(stale) == fresh     # a second request that saw the stale token: no third token
    assert pt.issued == 2
    assert jwt.decode(fresh, options={"verify_signature": False})["iat"] == int(clock.t) + 1


# --- the request --------------------------------------------------------------------------
def _d(**over) -> Delivery:
    return Delivery.from_avro(delivery("push", address=over.pop("address", APNS), **over))


def test_headers_carry_topic_push_type_priority_expiration_collapse_id_and_a_stable_apns_id():
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    d = _d(expires_at=int(expires.timestamp() * 1000))
    req = build_request(d, "com.example.app")
    assert req.path == f"/3/device/{APNS}"
    h = req.headers
    assert h["apns-topic"] == "com.example.app"
    assert h["apns-push-type"] == "alert"
    assert h["apns-priority"] == "10"
    assert h["apns-expiration"] == str(int(expires.timestamp()))
    assert h["apns-collapse-id"] == d.notification_id
    assert h["apns-id"] == build_request(d, "com.example.app").headers["apns-id"]   # the same delivery, the same id
    assert len(h["apns-id"]) == 36
    body = json.loads(req.body)
    assert body == {"aps": {"alert": {"title": d.push_title, "body": d.text}}, "kind": "reset", "delivery_id": d.delivery_id}


def test_bulk_is_sent_power_considerate_no_ttl_means_try_once_and_a_collapse_id_datum_wins():
    d = _d(lane="bulk", expires_at=None, push_data={"collapse_id": "ü" * 40, "k": "v"})
    assert d.lane == Lane.BULK
    h = build_request(d, "t").headers
    assert h["apns-priority"] == "5"
    assert h["apns-expiration"] == "0"
    assert len(h["apns-collapse-id"].encode()) <= 64 and h["apns-collapse-id"] == "ü" * 32
    assert "collapse_id" not in json.loads(build_request(d, "t").body)


@pytest.mark.parametrize(("over", "error", "words"), [
    ({"address": "a1" * 31}, InvalidAddress, "64 hex"),
    ({"address": FCM}, InvalidAddress, "64 hex"),
    ({"push_title": "two\nlines"}, Permanent, "push title"),
    ({"push_data": {"aps": "x"}}, Permanent, "reserved"),
    ({"text": "x" * 5000}, Permanent, "4096"),
])
def test_what_apns_cannot_carry_is_that_deliverys_own_error(over, error, words):
    with pytest.raises(error, match=words):
        build_request(_d(**over), "t")


def test_apns_token_format():
    assert is_apns_token(APNS) and is_apns_token(APNS.upper())
    assert not is_apns_token(FCM) and not is_apns_token("g" * 64) and not is_apns_token("a" * 63)


# --- answers → the taxonomy -----------------------------------------------------------------
@pytest.mark.parametrize(("status", "reason", "expect"), [
    (410, "Unregistered", InvalidToken),
    (400, "BadDeviceToken", InvalidToken),
    (403, "ExpiredProviderToken", ExpiredToken),
    (403, "InvalidProviderToken", Permanent),
    (400, "DeviceTokenNotForTopic", Permanent),
    (413, "PayloadTooLarge", Permanent),
    (429, "TooManyRequests", RateLimited),
    (500, "InternalServerError", Retryable),
    (503, "ServiceUnavailable", Retryable),
])
def test_error_answers_map_onto_the_taxonomy(status, reason, expect):
    got = map_response(status, reason, {"retry-after": "3"}, 1_700_000_000_000 if status == 410 else None)
    assert type(got) is expect
    assert reason in str(got)
    if isinstance(got, RateLimited):
        assert got.retry_after == 3.0
    if status == 410:
        assert "invalid since" in str(got)


def test_a_missing_key_file_is_retryable_for_the_whole_batch_not_a_crash(tmp_path):
    sink = ApnsSink("https://127.0.0.1:9", "K", "T", "t", key_file=tmp_path / "absent.p8")
    results = asyncio.run(sink.send_batch([_d(), _d()]))
    assert [type(r) for r in results] == [Retryable, Retryable]
    assert "absent.p8" in str(results[0])


# --- the dispatcher -----------------------------------------------------------------------
def test_the_push_sink_sends_apns_tokens_to_apns_the_rest_to_fcm_and_keeps_the_order():
    fcm, apns = MemorySink(Channel.PUSH, "fcm", 500), MemorySink(Channel.PUSH, "apns", 1000)
    apns.script(APNS, InvalidToken("gone"))
    sink = PushSink(fcm, apns)
    ds = [_d(address=FCM), _d(address=APNS), _d(address=FCM + "b"), _d(address="b2" * 32)]
    results = asyncio.run(sink.send_batch(ds))
    assert [d.address for d in fcm.given] == [FCM, FCM + "b"]
    assert [d.address for d in apns.given] == [APNS, "b2" * 32]
    assert isinstance(results[0], Sent) and results[0].provider_message_id.startswith("fcm-")
    assert isinstance(results[1], InvalidToken)
    assert isinstance(results[2], Sent) and results[2].provider_message_id.startswith("fcm-")
    assert isinstance(results[3], Sent) and results[3].provider_message_id.startswith("apns-")
    assert sink.max_batch == 500
    only_fcm = asyncio.run(sink.send_batch([_d(address=FCM)]))
    assert len(only_fcm) == 1 and len(apns.calls) == 1   # no empty call to the other service


def test_the_factory_builds_the_dispatcher_unless_apns_is_off(tmp_path):
    on = Settings(home=tmp_path)
    sink = build_sink(on, "push")
    assert isinstance(sink, PushSink) and sink.provider == "push"
    assert isinstance(sink.apns, ApnsSink) and sink.apns.base_url == on.apns.url
    asyncio.run(sink.close())
    off = build_sink(Settings(home=tmp_path, apns=ApnsConfig(enabled=False)), "push")
    assert isinstance(off, FcmSink)
    asyncio.run(off.close())


def test_the_key_text_is_masked_when_settings_are_printed():
    # the key's own text, not the word "secret" (settings have fields called secret: console, unsubscribe)
    s = Settings(apns=ApnsConfig(key="-----BEGIN PRIVATE KEY-----\nMIGkeyTextXyZ\n-----END PRIVATE KEY-----"))
    assert "MIGkeyTextXyZ" not in str(s.masked()) and "MIGkeyTextXyZ" not in repr(s)
    assert "MIGkeyTextXyZ" in s.to_env()["HERALD_APNS"]   # a child process gets it in clear


@pytest.mark.parametrize("tok", [APNS, APNS.upper(), FCM, "ab" * 31, "g" * 64, "f" * 120, "a1" * 32 + " "])
def test_the_dispatcher_and_the_api_agree_on_what_an_apns_token_is(tok):
    from producers.api.validation import APNS_TOKEN

    assert is_apns_token(tok) == bool(APNS_TOKEN.match(tok))


def test_the_sandbox_makes_its_key_and_certificates_once_and_the_ca_signed_the_server_certificate(tmp_path):
    from cryptography import x509

    from infra.tools.sandbox.apns import ensure_material

    first = ensure_material(tmp_path / "apns", "KEY1")
    key = first.key_file.read_bytes()
    again = ensure_material(tmp_path / "apns", "KEY1")
    assert again == first and again.key_file.read_bytes() == key and first.key_file.name == "AuthKey_KEY1.p8"
    ca = x509.load_pem_x509_certificate(first.ca_file.read_bytes())
    cert = x509.load_pem_x509_certificate(first.cert_file.read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert oct(first.key_file.stat().st_mode & 0o777) == "0o600"


def test_a_410_names_when_the_token_became_invalid_in_utc():
    got = map_response(410, "Unregistered", None, 1_700_000_000_000)
    assert "2023-11-14T22:13:20+00:00" in str(got)
