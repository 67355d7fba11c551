"""The soak's tally (bench/soak_load.py): which answers are expected during its own restarts."""

import time

import pytest

from bench.soak_load import DEGRADED_ON_PURPOSE, Tally, _failing_checks

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"status":"degraded","checks":{"store":{"ok":true},"mqtt":{"ok":false}}}',
         frozenset({"mqtt"})),
        (b'{"status":"ok","checks":{"store":{"ok":true}}}', frozenset()),  # not degraded
        (b'{"error_code":"internal_error","message":"x","details":{}}', frozenset()),
        (b"<html>", frozenset()),  # not JSON
        (b"[]", frozenset()),  # JSON, not a health document
    ],
)
def test_failing_checks(body: bytes, expected: frozenset[str]) -> None:
    assert _failing_checks(body) == expected


def test_degraded_is_expected_only_for_the_dependency_restarted_then() -> None:
    tally = Tally()
    before = time.monotonic()
    tally.outage_began(frozenset({"mqtt"}))
    during = time.monotonic()
    assert tally.expected_degraded(frozenset({"mqtt"}), during)  # the outage is still open
    tally.outage_ended()
    assert tally.expected_degraded(frozenset({"mqtt"}), during)
    assert not tally.expected_degraded(frozenset({"store"}), during)  # another check failed
    assert not tally.expected_degraded(frozenset({"mqtt", "store"}), during)
    assert not tally.expected_degraded(frozenset(), during)  # not a degraded answer
    assert not tally.expected_degraded(frozenset({"mqtt"}), before - 1)  # before the outage
    assert not tally.expected_degraded(frozenset({"mqtt"}), time.monotonic() + 60)  # long after


def test_a_degraded_health_answer_during_an_outage_is_not_a_server_error() -> None:
    tally = Tally()
    tally.count("GET as viewer", DEGRADED_ON_PURPOSE)
    assert tally.server_errors == 0
    tally.count("GET as viewer", 503)
    tally.count("GET as admin", 500)
    assert tally.server_errors == 2
