"""A campaign's send window as written (``"09:00-18:00"``): parsed and checked once, by the producer and by route."""
from __future__ import annotations

from datetime import time


def parse_window(text: str) -> tuple[time, time]:
    """``"09:00-18:00"`` (``HH:MM`` or ``HH:MM:SS``, may span midnight: ``"22:00-02:00"``) → (start, end);
    raises ValueError with a message naming the problem."""
    start_text, dash, end_text = text.strip().partition("-")
    try:
        if not dash:
            raise ValueError
        start, end = time.fromisoformat(start_text.strip()), time.fromisoformat(end_text.strip())
    except ValueError:
        raise ValueError("send window: expected HH:MM-HH:MM, like 09:00-18:00") from None
    if start.tzinfo is not None or end.tzinfo is not None:
        raise ValueError("send window: no UTC offset; the window is in each recipient's own time zone")
    if start == end:
        raise ValueError("send window: starts where it ends")
    return start, end

