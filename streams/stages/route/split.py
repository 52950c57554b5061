"""Campaign templates rendered once per chunk into pre-split text, then filled per recipient: pure, no I/O.

A campaign's recipients share the template and its variables; what differs is
``user`` (first name, locale...) and the ids. When a template uses those only
as plain output, ``{{ user.first_name }}`` or ``{{ user.first_name or 'there' }}``
(optionally ``| e``), each such expression becomes a slot: the template is
rendered once with a marker in every slot, the result split at the markers,
and a recipient's text is the literal parts joined with that recipient's slot
values (escaped where Jinja would escape them). Any other use of a
per-recipient name (a test, a loop, a filter, an assignment) makes the part
unsplittable, and those recipients are rendered by Jinja as before: the
output is the same either way, which ``tests/unit/test_split_render.py``
checks against Jinja for every shape it accepts.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from jinja2 import Template, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import escape

from schemas.records import SharedContent
from streams.templates import CompiledTemplate, render_warnings

PER_RECIPIENT = frozenset({"user", "event_id", "notification_id"})
# a marker: private-use characters (no escaping touches them) around a random nonce (no variable can forge one) and
# the slot's index; a render whose text holds those characters anywhere else is not split
_OPEN, _CLOSE = "\ue000", "\ue001"
# a marker: its render's nonce and its slot (compiled once: a pattern per nonce was compiled per chunk and part)
_MARKER = re.compile(f"{_OPEN}([0-9a-f]{{16}}):(\\d+){_CLOSE}")


@dataclass(frozen=True, slots=True)
class Slot:
    name: str                # "user", "event_id" or "notification_id"
    attr: str | None         # user.<attr> / user['<attr>']
    fallback: str | None     # ``or 'const'``: used when the value is empty
    escaped: bool            # autoescape or ``| e``


@dataclass(frozen=True, slots=True)
class SplitPlan:
    template: Template       # the part with every slot turned into a variable ``__slot_<i>``
    slots: tuple[Slot, ...]


@dataclass(frozen=True, slots=True)
class Prepared:
    pieces: tuple[str, ...]            # the rendered part cut at its slots, with "" where a slot goes
    at: tuple[tuple[int, Slot], ...]   # each slot and its position in ``pieces``: a fill touches the slots only
    warnings: tuple[str, ...] = ()  # what the render said (an unsafe link replaced...), said for every recipient

    def fill(self, view: dict[str, Any], ids: dict[str, str]) -> str:
        if not self.at:
            return "".join(self.pieces).strip()
        out = list(self.pieces)
        for (i, _), text in zip(self.at, self.values(view, ids), strict=True):
            out[i] = text
        return "".join(out).strip()

    def values(self, view: dict[str, Any], ids: dict[str, str]) -> list[str]:
        """One recipient's slot values, escaped where Jinja would escape them, in the order of ``at``."""
        out = []
        for _, slot in self.at:
            value: Any = view[slot.attr] if slot.attr is not None else ids[slot.name]
            if slot.fallback is not None and not value:
                value = slot.fallback
            text = str(value)
            out.append(str(escape(text)) if slot.escaped else text)
        return out

    def literals(self) -> tuple[str, ...] | None:
        """The n+1 literal pieces around the n slots such that joining them with a recipient's values is exactly
        ``fill`` (its ``.strip()`` done on them), or None when the strip could reach a value: a slot with nothing
        but whitespace before it or after it."""
        cut: list[str] = []
        run: list[str] = []
        slots = {i for i, _ in self.at}
        for i, piece in enumerate(self.pieces):
            if i in slots:
                cut.append("".join(run))
                run = []
            else:
                run.append(piece)
        cut.append("".join(run))
        if len(cut) == 1:
            return (cut[0].strip(),)
        if not cut[0].strip() or not cut[-1].strip():
            return None
        cut[0], cut[-1] = cut[0].lstrip(), cut[-1].rstrip()
        return tuple(cut)


class _Unsplittable(Exception):
    pass


def plan(env: ImmutableSandboxedEnvironment, source: str, user_attrs: frozenset[str]) -> SplitPlan | None:
    """A split plan for one template part (without slots when nothing in it is per recipient), or None when it uses
    a per-recipient name other than as plain output."""
    try:
        ast = env.parse(source)
        slots: list[Slot] = []
        autoescape = bool(env.autoescape)
        for output in ast.find_all(nodes.Output):
            output.nodes = [_slot_of(node, slots, autoescape, user_attrs) for node in output.nodes]
        for name in ast.find_all(nodes.Name):   # what is left: a per-recipient name used any other way
            if name.name in PER_RECIPIENT:
                raise _Unsplittable
        template = env.from_string(ast)   # jinja compiles a parsed template as well as a string
    except _Unsplittable:
        return None
    except Exception:  # noqa: BLE001 - a template that does not compile is Jinja's to report, per recipient
        return None
    return SplitPlan(template, tuple(slots))


def _slot_of(node: nodes.Expr, slots: list[Slot], autoescape: bool, user_attrs: frozenset[str]) -> nodes.Expr:
    escaped = autoescape
    inner: nodes.Expr = node
    fallback: str | None = None
    if (isinstance(inner, nodes.Filter) and inner.name in ("e", "escape") and not inner.args and not inner.kwargs
            and inner.node is not None):
        escaped, inner = True, inner.node
    if isinstance(inner, nodes.Or):
        left, right = getattr(inner, "left", None), getattr(inner, "right", None)
        if isinstance(right, nodes.Const) and isinstance(right.value, str) and isinstance(left, nodes.Expr):
            inner, fallback = left, right.value
    slot: Slot | None = None
    if isinstance(inner, nodes.Name) and inner.name in ("event_id", "notification_id"):
        slot = Slot(inner.name, None, fallback, escaped)
    elif isinstance(inner, nodes.Getattr) and _is_user(inner.node) and inner.attr in user_attrs:
        slot = Slot("user", inner.attr, fallback, escaped)
    elif (isinstance(inner, nodes.Getitem) and _is_user(inner.node) and isinstance(inner.arg, nodes.Const)
          and inner.arg.value in user_attrs):
        slot = Slot("user", inner.arg.value, fallback, escaped)
    if slot is None:
        return node
    slots.append(slot)
    marked: nodes.Expr = nodes.Name(f"__slot_{len(slots) - 1}", "load")
    # the marker is a plain string, so autoescape would leave it as it is: escaping is the slot's, at fill time
    return nodes.MarkSafe(marked) if autoescape else marked


def _is_user(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == "user" and node.ctx == "load"


def prepare(split: SplitPlan, context: dict[str, Any]) -> Prepared | None:
    """Render the plan once with markers in its slots (``context``: the chunk's shared variables); None if that
    render fails (each recipient is then rendered by Jinja and gets its own error)."""
    nonce = secrets.token_hex(8)
    markers = {f"__slot_{i}": f"{_OPEN}{nonce}:{i}{_CLOSE}" for i in range(len(split.slots))}
    warnings: list[str] = []
    token = render_warnings.set(warnings)
    try:
        text = split.template.render({**context, **markers})
    except Exception:  # noqa: BLE001 - reported per recipient by the Jinja path
        return None
    finally:
        render_warnings.reset(token)
    parts: list[str | int] = []
    at = 0
    for m in _MARKER.finditer(text):
        if m.group(1) != nonce:   # not this render's: left in the text, which the check below then refuses
            continue
        if m.start() > at:
            parts.append(text[at:m.start()])
        parts.append(int(m.group(2)))
        at = m.end()
    if at < len(text):
        parts.append(text[at:])
    if any(isinstance(p, str) and (_OPEN in p or _CLOSE in p) for p in parts):
        return None   # a variable brought a marker character: not split, Jinja renders it
    return Prepared(tuple(p if isinstance(p, str) else "" for p in parts),
                    tuple((i, split.slots[p]) for i, p in enumerate(parts) if isinstance(p, int)), tuple(warnings))


PARTS = ("text", "subject", "html", "push_title")
Plans = dict[str, SplitPlan]          # per part of a compiled template that has it
PreparedParts = dict[str, Prepared]


def plan_template(tmpl: CompiledTemplate, user_attrs: frozenset[str]) -> Plans | None:
    """Plans for every part the template has, or None when one of them cannot be split (or it did not compile)."""
    if tmpl.error:
        return None
    plans: Plans = {}
    src = tmpl.source
    sources = {"text": src.body_text, "subject": src.subject, "html": src.body_html, "push_title": src.push_title}
    for part in PARTS:
        compiled, source = getattr(tmpl, part), sources[part]
        if compiled is None or source is None:
            continue
        found = plan(compiled.environment, source, user_attrs)
        if found is None:
            return None
        plans[part] = found
    return plans


def prepare_template(plans: Plans, context: dict[str, Any]) -> PreparedParts | None:
    prepared: PreparedParts = {}
    for part, split in plans.items():
        done = prepare(split, context)
        if done is None:
            return None
        prepared[part] = done
    return prepared


SHARED_PARTS = ("subject", "text", "html")   # an email's parts a chunk can carry once (SharedContent's order)


def shared_content(prepared: PreparedParts, min_bytes: int = 0) -> SharedContent | None:
    """What an email chunk of these recipients can carry once: each of subject, text and html whose literal pieces
    reproduce its fill exactly; None when none can, or when their pieces hold fewer than ``min_bytes`` characters
    (below that, slot bookkeeping costs more than carrying each recipient's few hundred bytes whole)."""
    parts = [p.literals() if (p := prepared.get(part)) is not None else None for part in SHARED_PARTS]
    if all(p is None for p in parts) or sum(len(piece) for p in parts if p for piece in p) < min_bytes:
        return None
    return SharedContent(*parts)


def slot_values(prepared: PreparedParts, content: SharedContent, view: dict[str, Any],
                ids: dict[str, str]) -> tuple[str, ...]:
    """One recipient's values for ``content``'s slots (subject's, then text's, then html's)."""
    out: list[str] = []
    for part, pieces in zip(SHARED_PARTS, content.parts(), strict=True):
        if pieces is not None and len(pieces) > 1:
            out.extend(prepared[part].values(view, ids))
    return tuple(out)
