"""The bulk lane's per-recipient steps around a DeliveryChunk, in CPU µs per recipient, no I/O.

A 1000-recipient email chunk of a campaign whose template splits into shared
parts (the common case): what route-bulk spends to pack and encode it, what a
deliver agent spends to decode it back into Deliveries, and what the SendGrid
sink and the SDK spend to write its one request (the JSON, its bytes and the SDK's debug message of them). Each step runs ``--runs`` times; the
lower quartile is printed (this machine's neighbours make the mean noisy).
Compare checkouts by running the same file against each:

    python bench/chunk.py [--recipients 1000] [--runs 40] [--json]
    PYTHONPATH=../other-checkout python bench/chunk.py
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))   # last: a checkout on PYTHONPATH is the one timed

from schemas.codec import Codec
from schemas.records import Delivery, chunk_deliveries, chunk_record
from schemas.vocabulary import Channel, Lane
from sinks.sendgrid import SendGridSink
from streams.stages.route.recipient import TEMPLATE_VIEW_KEYS, Recipient
from streams.stages.route.split import plan_template, prepare_template, shared_content, slot_values
from streams.templates import Environments, TemplateSource, compile_template

TEXT = "Hi {{ user.first_name or 'there' }},\n\n{{ headline }}\n{% for l in items %}- {{ l }}\n{% endfor %}"
HTML = "<p>Hi {{ user.first_name or 'there' }}</p><ul>{% for l in items %}<li>{{ l }}</li>{% endfor %}</ul>"
SUBJECT = "News for {{ user.first_name or 'you' }}"
VARIABLES = {"headline": "Spring is here", "items": ["one", "two", "three"]}


def deliveries(n: int) -> list[Delivery]:
    """A chunk's deliveries as route-bulk hands them to the packer: shared parts and each recipient's slot values."""
    tmpl = compile_template(Environments(), TemplateSource("weekly_digest", "email", "default", 1, TEXT,
                                                           subject=SUBJECT, body_html=HTML))
    plans = plan_template(tmpl, TEMPLATE_VIEW_KEYS)
    prepared = prepare_template(plans, {**VARIABLES, "event_type": "CampaignMessage"}) if plans else None
    content = shared_content(prepared) if prepared else None
    if prepared is None or content is None:
        raise SystemExit("bench/chunk.py: the template did not split into shared parts")
    out = []
    for i in range(n):
        r = Recipient(f"u{i}", email=f"u{i}@example.test", first_name=f"Name {i}")
        eid = f"c1:{r.id}"
        values = slot_values(prepared, content, r.template_view(), {"event_id": eid, "notification_id": eid})
        subject, text, html = content.fill(values)
        d = Delivery(delivery_id=f"d-{i:030d}", notification_id=eid, event_id=eid, event_type="CampaignMessage",
                     user_id=r.id, channel=Channel.EMAIL, category="marketing", address=r.email or "",
                     template="weekly_digest", text=text or "", occurred_at=1_700_000_000_000, lane=Lane.BULK,
                     subject=subject, html=html, campaign_id="c1")
        d.shared, d.slot_values = content, values
        out.append(d)
    return out


def quartile(step: Callable[[], object], runs: int, n: int) -> float:
    """CPU µs per recipient: the lower quartile of ``runs`` runs of ``step`` over ``n`` recipients."""
    times = []
    for _ in range(runs):
        started = time.process_time()
        step()
        times.append(time.process_time() - started)
    times.sort()
    return round(times[len(times) // 4] / n * 1e6, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipients", type=int, default=1000, help="recipients in the chunk (default 1000)")
    ap.add_argument("--runs", type=int, default=40, help="runs of each step (default 40)")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    args = ap.parse_args()
    codec = Codec()
    ds = deliveries(args.recipients)
    value = codec.encode("DeliveryChunk", chunk_record("c1/0", ds))
    back = chunk_deliveries(codec.decode(value).record)
    sink = SendGridSink("SG.bench", "http://127.0.0.1:1", "Herald <no-reply@herald.local>")

    def body() -> object:
        """The request as the SDK sends it: its bytes (a dict is dumped first), formatted into its debug message."""
        made = sink._shared_body(back, content=back[0].shared)  # type: ignore[arg-type]
        data = made.encode("utf-8") if isinstance(made, str) else json.dumps(made).encode("utf-8")
        # the SDK's own call: the bytes formatted as they are
        return "PAYLOAD: {data}".format(data=data)  # type: ignore[str-bytes-safe]  # noqa: UP032

    n = args.recipients
    result = {
        "route: pack and encode": quartile(lambda: codec.encode("DeliveryChunk", chunk_record("c1/0", ds)), args.runs, n),
        "deliver: decode into Deliveries": quartile(lambda: chunk_deliveries(codec.decode(value).record), args.runs, n),
        "sendgrid: the request": quartile(body, args.runs, n),
        "chunk bytes per recipient": round(len(value) / n, 1),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"DeliveryChunk of {n} recipients (CPU µs per recipient, lower quartile of {args.runs} runs)")
    for name, got in result.items():
        print(f"  {name:34s} {got}")


if __name__ == "__main__":
    main()
