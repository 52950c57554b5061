"""Herald's one error taxonomy. Vendor exceptions are mapped onto these inside ``sinks/`` and never leave it."""
from __future__ import annotations


class DeliveryError(Exception):
    """Base of every provider outcome that is not "sent"."""


class Retryable(DeliveryError):
    """Worth another attempt later: 5xx, timeouts, connection errors. Climbs the retry ladder."""


class RateLimited(DeliveryError):
    """429: slow down and wait ``retry_after`` seconds; does not spend a retry attempt."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Permanent(DeliveryError):
    """Will never succeed as it is: 4xx, invalid address. Straight to the DLQ / failed."""


class InvalidToken(Permanent):
    """The device token is gone (FCM UNREGISTERED, APNs 410): deactivate the device at once."""


class ProviderRejected(Permanent):
    """The provider refused the sender, not the message: authentication failed, the account is suspended or out of
    quota (SendGrid 401/403, SMTP 530/534/535). A second provider, when configured, takes the delivery at once; the
    circuit counts it as a failure of the provider, so traffic moves to the second one until the first recovers."""


class InvalidAddress(Permanent):
    """The address itself is unusable (malformed e-mail, not a phone number): dead-lettered as ``invalid_address``."""
