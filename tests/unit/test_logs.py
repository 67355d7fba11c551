"""Log records as a log pipeline reads them, and the trace id rules."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import orjson
import pytest

from core.logs import configure_logging, trace_id_from, trace_id_var
from streams.settings import load_settings

pytestmark = pytest.mark.unit

W3C = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(("traceparent", "request_id", "expected"), [
    pytest.param(W3C, None, "4bf92f3577b34da6a3ce929d0e0e4736", id="w3c-traceparent"),
    pytest.param(W3C.upper(), "req-1", "4bf92f3577b34da6a3ce929d0e0e4736", id="w3c-wins"),
    pytest.param("00-" + "0" * 32 + "-00f067aa0ba902b7-01", "req-1", "req-1",
                 id="all-zero-trace-id-is-invalid"),
    pytest.param("garbage", "req-1.2:3_x", "req-1.2:3_x", id="x-request-id"),
])
def test_the_callers_trace_id_is_kept(traceparent: str | None, request_id: str | None,
                                      expected: str) -> None:
    assert trace_id_from(traceparent, request_id) == expected


@pytest.mark.parametrize("request_id", [None, "", "a" * 65, "two words", "x\ninjected line"])
def test_otherwise_a_new_trace_id_is_made(request_id: str | None) -> None:
    made = trace_id_from(None, request_id)
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert made != trace_id_from(None, request_id)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger as ``sems`` configures it for JSON, writing here; restored after."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    out = io.StringIO()
    configure_logging("INFO", "json")
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    yield out
    root.handlers[:], level = saved
    root.setLevel(level)


def test_json_lines_carry_level_logger_message_and_trace_id(captured: io.StringIO) -> None:
    token = trace_id_var.set("4bf92f3577b34da6a3ce929d0e0e4736")
    try:
        logging.getLogger("sems.test").warning("store write failed, retrying in %.1f s", 1.0)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("sems.test").exception("unhandled")
    finally:
        trace_id_var.reset(token)
    logging.getLogger("sems.test").info("outside any request")
    lines = [orjson.loads(line) for line in captured.getvalue().splitlines()]
    assert [(d["level"], d["logger"], d["message"], d["trace_id"]) for d in lines] == [
        ("WARNING", "sems.test", "store write failed, retrying in 1.0 s",
         "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("ERROR", "sems.test", "unhandled", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("INFO", "sems.test", "outside any request", None),
    ]
    assert "RuntimeError: boom" in lines[1]["exception"]
    assert lines[0]["ts"].endswith("+00:00")


def test_settings_never_show_their_secrets() -> None:
    s = load_settings({"SEMS_INFLUX_TOKEN": "tok-s3cret",
                       "SEMS_POSTGRES_DSN": "postgresql://sems:pw-s3cret@db/sems"})
    shown = repr(s) + str(s) + s.model_dump_json()
    assert "s3cret" not in shown
    assert s.influx_token.get_secret_value() == "tok-s3cret"
