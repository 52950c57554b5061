"""The demo's orders add up: the confirmation email's total is the sum of its lines."""
from __future__ import annotations

import re

import pytest

from infra.tools.cli.demo import demo_order
from infra.tools.seed import SEED_TEMPLATES
from schemas.codec import Codec
from streams.stages.route.render import Rendered, render
from streams.templates import Environments, compile_template


def _cents(amount: str) -> int:
    return int(amount.replace(".", "").replace(",", ""))


@pytest.mark.parametrize("locale", ["default", "de"])
@pytest.mark.parametrize("i", [0, 1, 2, 7])
def test_the_demo_order_email_total_is_the_sum_of_its_lines(i: int, locale: str):
    src = next(t for t in SEED_TEMPLATES if (t.code, t.channel, t.locale) == ("order_confirmation", "email", locale))
    codec = Codec()
    # as the route agent reads it
    order = codec.decode(codec.encode("OrderPlaced", {"event_id": "e1", "occurred_at": 0, **demo_order(f"u{i}", i)})).record
    out = render(compile_template(Environments(), src), "email", {**order, "user": {"first_name": "Ada"}})
    assert isinstance(out, Rendered), out
    lines = [_cents(a) for a in re.findall(r"^- \d+ x .+?: ([\d.,]+) EUR", out.text, flags=re.M)]
    total = re.search(r"^\w+: ([\d.,]+) EUR\s*$", out.text, flags=re.M)
    assert len(lines) == 2 and total, out.text
    assert _cents(total.group(1)) == sum(lines), out.text
