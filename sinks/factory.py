"""Build the sink of a channel from settings (``email_provider``, ``sms_provider``, ``push_provider``).

The one place that reads ``Settings`` for the sinks: each sink class takes plain arguments.
"""
from __future__ import annotations

from infra.settings import Settings
from schemas.vocabulary import Channel
from sinks.base import Sink


def provider_of(settings: Settings, channel: str) -> str:
    return {Channel.EMAIL: settings.email_provider, Channel.SMS: settings.sms_provider,
            Channel.PUSH: settings.push_provider}[Channel(channel)]


def build_sink(settings: Settings, channel: str) -> Sink:
    provider = provider_of(settings, channel)
    if provider == "smtp":
        from sinks.smtp import SmtpSink

        pw = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        return SmtpSink(settings.smtp_host, settings.smtp_port, settings.email_from, settings.smtp_username, pw,
                        connections=settings.smtp_connections)
    if provider == "sendgrid":
        from sinks.sendgrid import SendGridSink

        return SendGridSink(settings.sendgrid_api_key.get_secret_value(), settings.sendgrid_host, settings.email_from)
    if provider == "twilio":
        from sinks.twilio import TwilioSink

        return TwilioSink(settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value(),
                          settings.twilio_from, settings.twilio_base_url)
    if provider == "fcm":
        from sinks.fcm import FcmSink

        return FcmSink.from_file(settings.fcm_credentials_file, settings.fcm_url)
    raise ValueError(f"no sink for provider {provider!r} of channel {channel!r}")
