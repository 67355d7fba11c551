"""Acknowledgements: how "this is safely handed on" travels back to where a value came from.

A value and its acknowledgement travel together on every hop, as the one envelope SEMS has:
a producer calls ``Sink.send(value, ack=...)`` and a consumer receives ``Batch`` (its values,
each with its ack, ``core.channels``). Whoever takes a value over calls, or hands on, its ack
once the value cannot be lost any more: stored, or in turn handed on to the next hop. The
meter's PUBACK is the first ack (``connectors/mqtt.py``); the store's commit is where it is
called. docs/architecture.md draws the path. The two ways acks combine are here:

- ``after(n, then)``: one value became ``n`` sends (a batch's rollups): ``then`` after the last.
- ``SharedAck``: one value went to ``n`` subscribers: acknowledged once all have handled it.
"""

from __future__ import annotations

from collections.abc import Callable

Ack = Callable[[], None]


def after(count: int, then: Ack) -> Ack | None:
    """An ack to pass to ``count`` sends that calls ``then`` after the last of them; with
    nothing to send, ``then`` is called at once."""
    if count == 0:
        then()
        return None
    remaining = count

    def ack() -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0:
            then()

    return ack


class SharedAck:
    """Fires the producer's ack once every subscriber has handled the event."""

    __slots__ = ("_ack", "_pending")

    def __init__(self, ack: Ack, pending: int) -> None:
        self._ack = ack
        self._pending = pending

    def __call__(self) -> None:
        self._pending -= 1
        if self._pending == 0:
            self._ack()
