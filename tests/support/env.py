"""Settings ↔ environment: how tests hand their settings to a worker subprocess."""
from __future__ import annotations

from infra.settings import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    return settings.to_env()
