"""A small client of the sandbox's control API, for tests, the demo and ``herald sandbox``."""
from __future__ import annotations

from typing import Any

import httpx


class SandboxControl:
    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        # trust_env=False: loopback must never go through a proxy from the environment
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, trust_env=False)

    def inbox(self, channel: str | None = None, to: str | None = None, envelope: bool = False) -> list[dict[str, Any]]:
        """The messages; ``envelope``: only channel, provider, to and times (nothing parsed: fast on a big inbox)."""
        return self._get(channel, to, envelope=envelope)["messages"]

    def stats(self) -> dict[str, Any]:
        """``{"count": messages recorded, "requests": {provider: n}, "held": requests waiting}``."""
        return self._get(None, None, summary=True)

    def requests(self, provider: str) -> int:
        return self.stats()["requests"][provider]

    def clear(self) -> None:
        self._http.delete("/_sandbox/inbox").raise_for_status()

    def faults(self, provider: str, **changes: Any) -> dict[str, Any]:
        r = self._http.post("/_sandbox/faults", json={"provider": provider, **changes})
        if r.status_code >= 400:
            raise ValueError(r.json().get("error", r.text))
        return r.json()

    def clear_faults(self) -> None:
        self._http.delete("/_sandbox/faults").raise_for_status()

    def _get(self, channel: str | None, to: str | None, summary: bool = False, envelope: bool = False) -> dict[str, Any]:
        params = {k: v for k, v in (("channel", channel), ("to", to)) if v}
        if summary:
            params["summary"] = "1"
        if envelope:
            params["envelope"] = "1"
        r = self._http.get("/_sandbox/inbox", params=params)
        r.raise_for_status()
        return r.json()

    def close(self) -> None:
        self._http.close()
