"""``free_port``: ports for child processes, out of the range the kernel hands to outgoing connections."""

from __future__ import annotations

import socket

from llmd_kserve.stack import procs
from llmd_kserve.stack.procs import free_port


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    lo, _ = procs._ephemeral_range()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    if lo - procs._LOWEST_PORT >= 1000:
        assert all(procs._LOWEST_PORT <= p < lo for p in ports)
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_a_port_in_use_is_not_given_out(monkeypatch) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        assert not procs._bindable("127.0.0.1", held.getsockname()[1])
    real, tried = procs._bindable, []

    def first_in_use(host: str, port: int) -> bool:
        tried.append(port)
        return len(tried) > 1 and real(host, port)

    monkeypatch.setattr(procs, "_bindable", first_in_use)
    port = free_port()
    assert len(tried) >= 2 and port == tried[-1]  # the candidate in use was passed over


def test_without_room_below_the_range_it_binds_port_zero(monkeypatch) -> None:
    monkeypatch.setattr(procs, "_ephemeral_range", lambda: (procs._LOWEST_PORT + 10, 60999))
    a, b = free_port(), free_port()
    assert a != b and a >= 1024
