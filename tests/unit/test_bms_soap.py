"""SOAP envelopes of the BMS simulator and the client's mapping of answers and errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import httpx
import pytest
import zeep.exceptions
from lxml import etree  # type: ignore[import-untyped]

from connectors.bms.soap import classify, result_from_answer
from simulators.bms.service import BmsFault, BmsService
from simulators.bms.soap import NS, SOAP_ENV_NS, handle_soap, parse_request, wsdl_for
from simulators.building import BuildingModel
from tables.ports.bms import CommandResult

pytestmark = pytest.mark.unit

T0 = datetime(2026, 7, 15, 18, 0, tzinfo=UTC)


def envelope(body: str) -> bytes:
    return (f'<s:Envelope xmlns:s="{SOAP_ENV_NS}" xmlns:b="{NS}"><s:Body>{body}</s:Body>'
            "</s:Envelope>").encode()


SET_LEVEL = ("<b:SetLightingLevel><b:facility_id>fac-001</b:facility_id><b:group_id>floor-1"
             "</b:group_id><b:level_pct>{level}</b:level_pct><b:command_id>c-1</b:command_id>"
             "</b:SetLightingLevel>")


@pytest.fixture
def service() -> BmsService:
    model = BuildingModel(facility_id="fac-001", timezone="America/New_York", seed=1)
    return BmsService({"fac-001": model}, clock=lambda: T0)


def test_parses_a_valid_request() -> None:
    assert parse_request(envelope(SET_LEVEL.format(level="55.5"))) == ("SetLightingLevel", {
        "facility_id": "fac-001", "group_id": "floor-1", "level_pct": "55.5",
        "command_id": "c-1"})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<not xml", "request is not well-formed XML"),
        (b"<Envelope/>", "request is not a SOAP 1.1 Envelope"),
        (envelope(""), "the SOAP Body must hold exactly one operation element"),
        (envelope("<b:ListZones/><b:ListZones/>"),
         "the SOAP Body must hold exactly one operation element"),
        (envelope("<b:Reboot/>"), "unknown operation {urn:sems:bms:1}Reboot"),
        (envelope("<ListZones><facility_id>f</facility_id></ListZones>"),
         "unknown operation ListZones"),  # unqualified: not in the service's namespace
        (envelope("<b:ListZones/>"), "invalid ListZones: Element '{urn:sems:bms:1}ListZones': "
         "Missing child element(s)"),
        (envelope(SET_LEVEL.format(level="half")), "invalid SetLightingLevel: Element "
         "'{urn:sems:bms:1}level_pct': 'half' is not a valid value"),
        (envelope("<b:ListZones><b:facility_id></b:facility_id></b:ListZones>"),
         "invalid ListZones"),  # ids must not be empty
    ],
)
def test_refuses_invalid_requests(body: bytes, message: str) -> None:
    with pytest.raises(BmsFault) as fault:
        parse_request(body)
    assert fault.value.code == "invalid_request"
    assert fault.value.message.startswith(message)


def test_refuses_entities() -> None:
    body = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            + envelope("<b:ListZones><b:facility_id>&e;</b:facility_id></b:ListZones>"))
    with pytest.raises(BmsFault) as fault:
        parse_request(body)
    assert (fault.value.code, fault.value.message) == (
        "invalid_request", "a SOAP message must not contain a document type declaration")


def test_answers_a_command(service: BmsService) -> None:
    status, body = handle_soap(service, envelope(SET_LEVEL.format(level="40")))

    answer = etree.fromstring(body).find(f"{{{SOAP_ENV_NS}}}Body/{{{NS}}}SetLightingLevelResponse")
    assert status == 200
    assert [(etree.QName(e).localname, e.text) for e in answer] == [
        ("command_id", "c-1"), ("accepted", "true"), ("applied_at", "2026-07-15T18:00:00+00:00"),
        ("replayed", "false")]
    assert service.hits == {"SetLightingLevel": 1}


@pytest.mark.parametrize(
    ("level", "faultcode", "code"),
    [
        ("140", "soapenv:Client", "out_of_range"),  # the caller's mistake
        ("40", "soapenv:Server", "injected"),  # the BMS's failure
    ],
)
def test_answers_a_fault(service: BmsService, level: str, faultcode: str, code: str) -> None:
    service.faults.fail_next_commands = 1 if code == "injected" else 0

    status, body = handle_soap(service, envelope(SET_LEVEL.format(level=level)))

    fault = etree.fromstring(body).find(f"{{{SOAP_ENV_NS}}}Body/{{{SOAP_ENV_NS}}}Fault")
    assert status == 500
    assert fault.findtext("faultcode") == faultcode
    assert fault.findtext(f"detail/{{{NS}}}BmsFault/{{{NS}}}code") == code
    assert fault.findtext(f"detail/{{{NS}}}BmsFault/{{{NS}}}command_id") == "c-1"


def test_counts_invalid_requests(service: BmsService) -> None:
    status, _ = handle_soap(service, b"nonsense")
    assert (status, service.hits) == (500, {"invalid": 1})


def test_the_wsdl_points_at_where_it_is_served() -> None:
    root = etree.fromstring(wsdl_for("http://bms.example:9000/bms/soap"))
    (address,) = root.iter("{http://schemas.xmlsoap.org/wsdl/soap/}address")
    assert address.get("location") == "http://bms.example:9000/bms/soap"


def fault_with_code(code: str) -> zeep.exceptions.Fault:
    detail = etree.fromstring(f'<detail><b:BmsFault xmlns:b="{NS}"><b:code>{code}</b:code>'
                              "<b:message>m</b:message></b:BmsFault></detail>")
    return zeep.exceptions.Fault(  # type: ignore[no-untyped-call]
        "offset too big", code="soapenv:Client", detail=detail)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (fault_with_code("out_of_range"), ("fault", "offset too big", "out_of_range")),
        (zeep.exceptions.Fault("no detail"),  # type: ignore[no-untyped-call]
         ("fault", "no detail", None)),
        (TimeoutError(), ("timeout", "no answer from the BMS in time", None)),
        (httpx.ReadTimeout("slow"), ("timeout", "no answer from the BMS in time", None)),
        (zeep.exceptions.TransportError(status_code=502),  # type: ignore[no-untyped-call]
         ("transport", "HTTP 502 from the BMS without a SOAP fault", None)),
        (zeep.exceptions.XMLSyntaxError("bad"),  # type: ignore[no-untyped-call]
         ("protocol", "unexpected answer from the BMS: bad", None)),
        (ValueError("a bug"), None),  # not a BMS failure: it propagates
    ],
)
def test_classifies_errors(error: BaseException, expected: tuple[str, str, str | None] | None
                           ) -> None:
    assert classify(error) == expected


def test_classifies_refused_connections() -> None:
    classified = classify(httpx.ConnectError("refused"))
    assert classified is not None and classified[0] == "transport"


NEW_YORK_SUMMER = timezone(timedelta(hours=-4))


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (SimpleNamespace(command_id="c-1", accepted=True, reason=None, replayed=False,
                         applied_at=datetime(2026, 7, 15, 14, 0, tzinfo=NEW_YORK_SUMMER)),
         CommandResult("c-1", True, T0)),  # applied_at comes back in UTC
        (SimpleNamespace(command_id="c-1", accepted=True, reason=None, replayed=True,
                         applied_at=T0),
         CommandResult("c-1", True, T0, replayed=True)),
        (SimpleNamespace(command_id="c-1", accepted=False, reason="override", replayed=False,
                         applied_at=None),
         CommandResult("c-1", False, None, "override", "rejected")),
        (SimpleNamespace(command_id="c-9", accepted=True, reason=None, replayed=False,
                         applied_at=T0),
         CommandResult("c-1", False, None, "the BMS answered for command c-9", "protocol")),
    ],
)
def test_results_from_answers(answer: SimpleNamespace, expected: CommandResult) -> None:
    assert result_from_answer("c-1", answer) == expected
