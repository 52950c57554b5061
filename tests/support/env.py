"""Settings ↔ environment: how tests hand their settings to a worker subprocess."""
from __future__ import annotations

import json

from pydantic import SecretStr

from infra.settings import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    env: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, (list, dict)):
            value = json.dumps(value)
        env[f"HERALD_{name.upper()}"] = str(value)
    return env
