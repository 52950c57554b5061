"""Build the sink of a channel from settings (``email_provider``, ``sms_provider``, ``push_provider``).

The one place that reads ``Settings`` for the sinks: each sink class takes plain arguments.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from infra.settings import Settings
from infra.unsubscribe import Unsubscribe
from schemas.vocabulary import Channel
from sinks.base import Sink

if TYPE_CHECKING:
    from sinks.apns import ApnsSink


def provider_of(settings: Settings, channel: str) -> str:
    return {Channel.EMAIL: settings.email_provider, Channel.SMS: settings.sms_provider,
            Channel.PUSH: settings.push_provider}[Channel(channel)]


SECOND_TWILIO = "twilio-failover"   # the provider name of the second Twilio account (its own circuit and metrics)


def failover_of(settings: Settings, channel: str) -> str | None:
    """The channel's second provider, used while the first one's circuit is open or it refuses Herald's account
    (None: none)."""
    if Channel(channel) == Channel.EMAIL:
        return settings.email_failover_provider
    if Channel(channel) == Channel.SMS and settings.sms_failover.enabled:
        return SECOND_TWILIO
    return None


def build_failover_sink(settings: Settings, channel: str) -> Sink | None:
    provider = failover_of(settings, channel)
    return build_sink(settings, channel, provider) if provider is not None else None


def build_sink(settings: Settings, channel: str, provider: str | None = None) -> Sink:
    """The sink of ``provider`` (default: the channel's provider)."""
    provider = provider or provider_of(settings, channel)
    if provider == "smtp":
        from sinks.smtp import SmtpSink

        pw = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        return SmtpSink(settings.smtp_host, settings.smtp_port, settings.email_from, settings.smtp_username, pw,
                        connections=settings.smtp_connections, unsubscribe=Unsubscribe.from_settings(settings))
    if provider == "sendgrid":
        from sinks.sendgrid import SendGridSink

        return SendGridSink(settings.sendgrid_api_key.get_secret_value(), settings.sendgrid_host, settings.email_from,
                            unsubscribe=Unsubscribe.from_settings(settings))
    if provider in ("twilio", SECOND_TWILIO):
        from sinks.twilio import TwilioSink

        public = settings.api.public_url
        callback = f"{public.rstrip('/')}/v1/webhooks/twilio" if public else None
        second = settings.sms_failover
        if provider == SECOND_TWILIO and second.account_sid and second.auth_token:
            return TwilioSink(second.account_sid, second.auth_token.get_secret_value(), second.sender or settings.twilio_from,
                              second.base_url or settings.twilio_base_url, status_callback=callback, provider=SECOND_TWILIO)
        return TwilioSink(settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value(),
                          settings.twilio_from, settings.twilio_base_url, status_callback=callback)
    if provider == "fcm":
        from sinks.fcm import FcmSink

        fcm = FcmSink.from_file(settings.fcm_credentials_file, settings.fcm_url)
        if not settings.apns.enabled:
            return fcm
        from sinks.push import PushSink

        return PushSink(fcm, build_apns_sink(settings))
    raise ValueError(f"no sink for provider {provider!r} of channel {channel!r}")


def build_apns_sink(settings: Settings) -> ApnsSink:
    """The APNs sink of ``settings.apns``; unset key and CA files are the sandbox's (under ``HERALD_HOME``)."""
    from sinks.apns import ApnsSink, is_loopback, sandbox_ca_file, sandbox_key_file

    cfg = settings.apns
    key_pem = cfg.key.get_secret_value() if cfg.key else None
    key_file = cfg.key_file or (None if key_pem else sandbox_key_file(settings.home, cfg.key_id))
    ca_file = cfg.ca_file or (sandbox_ca_file(settings.home) if is_loopback(cfg.url) else None)
    return ApnsSink(cfg.url, cfg.key_id, cfg.team_id, cfg.topic, key_pem=key_pem, key_file=key_file, ca_file=ca_file,
                    max_in_flight=cfg.max_in_flight, timeout=cfg.timeout, refresh_after=cfg.token_refresh_seconds)
