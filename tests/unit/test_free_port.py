"""Ports for the test servers: picked where no outgoing connection can take them before the server binds."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from infra.tools.sandbox import server
from infra.tools.sandbox.server import PICKED_PORTS_FROM, free_port


def test_a_picked_port_lies_below_the_kernels_ephemeral_range_and_can_be_bound(tmp_path: Path, monkeypatch) -> None:
    # the kernel gives outgoing connections ports from this range: one of them can take a port picked by bind(0)
    # between the pick and the server's bind (a sandbox failed to start that way)
    fake = tmp_path / "ip_local_port_range"
    fake.write_text("32768\t60999\n")
    monkeypatch.setattr(server, "EPHEMERAL_RANGE", fake)
    ports = {free_port() for _ in range(20)}
    assert all(PICKED_PORTS_FROM <= p < 32768 for p in ports) and len(ports) > 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports.pop()))


@pytest.mark.parametrize("content", ["1024\t65535\n", "not numbers", None])
def test_without_room_below_the_range_the_kernel_picks(tmp_path: Path, monkeypatch, content: str | None) -> None:
    fake = tmp_path / "ip_local_port_range"
    if content is not None:
        fake.write_text(content)
    monkeypatch.setattr(server, "EPHEMERAL_RANGE", fake)
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))
