"""SOAP 1.1 document/literal envelopes for the BMS simulator.

A request body is parsed without entities or network access, validated against the schema
inside ``bms.wsdl`` (the one contract both sides read), dispatched to ``BmsService``, and
answered with the response element or a SOAP Fault whose detail is a ``bms:BmsFault``.
Faults go out with HTTP 500 as the SOAP 1.1 HTTP binding requires.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
from collections.abc import Mapping
from datetime import datetime
from importlib import resources
from typing import Any

from lxml import etree  # type: ignore[import-untyped]

from simulators.bms.service import BmsFault, BmsService, CommandOutcome

log = logging.getLogger(__name__)

NS = "urn:sems:bms:1"
SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
WSDL_SOAP_NS = "http://schemas.xmlsoap.org/wsdl/soap/"
XSD_NS = "http://www.w3.org/2001/XMLSchema"
OPERATIONS = frozenset(
    {"ListZones", "ListLightingGroups", "SetZoneSetpointOffset", "SetLightingLevel",
     "GetPointValues"}
)
NSMAP = {"soapenv": SOAP_ENV_NS, "bms": NS}


@functools.cache
def wsdl_bytes() -> bytes:
    """The shipped WSDL, read on first use (never at import)."""
    return resources.files("simulators.bms").joinpath("bms.wsdl").read_bytes()


@functools.cache
def _parser() -> Any:
    return etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True)


@functools.cache
def _schema() -> Any:
    root = etree.fromstring(wsdl_bytes(), _parser())
    schema = root.find(f"{{{WSDL_NS}}}types/{{{XSD_NS}}}schema")
    # The schema declares tns itself: QNames in attribute values do not survive the copy.
    return etree.XMLSchema(copy.deepcopy(schema))


def wsdl_for(location: str) -> bytes:
    """The WSDL with its ``soap:address`` pointing at where it is being served."""
    root = etree.fromstring(wsdl_bytes(), _parser())
    for address in root.iter(f"{{{WSDL_SOAP_NS}}}address"):
        address.set("location", location)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8"))


def _invalid(message: str) -> BmsFault:
    return BmsFault("invalid_request", message)


def parse_request(body: bytes) -> tuple[str, dict[str, str]]:
    """The operation name and its fields (local name -> text) of a valid request envelope."""
    try:
        root = etree.fromstring(body, _parser())
    except etree.XMLSyntaxError as exc:
        raise _invalid(f"request is not well-formed XML: {exc}") from None
    if root.getroottree().docinfo.doctype:
        raise _invalid("a SOAP message must not contain a document type declaration")
    if root.tag != f"{{{SOAP_ENV_NS}}}Envelope":
        raise _invalid("request is not a SOAP 1.1 Envelope")
    soap_body = root.find(f"{{{SOAP_ENV_NS}}}Body")
    children = [] if soap_body is None else [c for c in soap_body if isinstance(c.tag, str)]
    if len(children) != 1:
        raise _invalid("the SOAP Body must hold exactly one operation element")
    operation = children[0]
    name = etree.QName(operation)
    if name.namespace != NS or name.localname not in OPERATIONS:
        raise _invalid(f"unknown operation {operation.tag}")
    schema = _schema()
    try:
        valid = schema.validate(operation)
    except etree.XMLSchemaValidateError as exc:
        raise _invalid(f"invalid {name.localname}: {exc}") from None
    if not valid:
        raise _invalid(f"invalid {name.localname}: {schema.error_log.last_error.message}")
    return name.localname, {etree.QName(c).localname: c.text or "" for c in operation}


def _el(name: str, *children: Any, text: str | None = None) -> Any:
    element = etree.Element(f"{{{NS}}}{name}", nsmap=NSMAP)
    element.extend(children)
    element.text = text
    return element


def _double(name: str, value: float) -> Any:
    if math.isnan(value):
        text = "NaN"
    elif math.isinf(value):
        text = "INF" if value > 0 else "-INF"
    else:
        text = repr(value)
    return _el(name, text=text)


def _time(name: str, at: datetime) -> Any:
    return _el(name, text=at.isoformat())


def _command_result(name: str, outcome: CommandOutcome) -> Any:
    parts = [_el("command_id", text=outcome.command_id),
             _el("accepted", text="true" if outcome.accepted else "false")]
    if outcome.applied_at is not None:
        parts.append(_time("applied_at", outcome.applied_at))
    if outcome.reason is not None:
        parts.append(_el("reason", text=outcome.reason))
    parts.append(_el("replayed", text="true" if outcome.replayed else "false"))
    return _el(name, *parts)


def dispatch(service: BmsService, operation: str, fields: Mapping[str, str]) -> Any:
    """The response element of a parsed request; raises ``BmsFault``."""
    facility_id = fields["facility_id"]
    if operation == "ListZones":
        return _el("ListZonesResponse", *(
            _el("zone", _el("zone_id", text=z.zone_id),
                _double("setpoint_offset_c", z.setpoint_offset_c),
                _double("max_offset_c", z.max_offset_c), _double("rated_kw", z.rated_kw))
            for z in service.list_zones(facility_id)))
    if operation == "ListLightingGroups":
        return _el("ListLightingGroupsResponse", *(
            _el("group", _el("group_id", text=g.group_id), _double("level_pct", g.level_pct),
                _double("rated_kw", g.rated_kw))
            for g in service.list_lighting_groups(facility_id)))
    if operation == "GetPointValues":
        at, points = service.point_values(facility_id)
        return _el("GetPointValuesResponse", _time("at", at), *(
            _el("point", _el("point_id", text=p.point_id), _double("value", p.value),
                _el("unit", text=p.unit))
            for p in points))
    command_id = fields["command_id"]
    if operation == "SetZoneSetpointOffset":
        outcome = service.set_zone_setpoint_offset(
            facility_id, fields["zone_id"], float(fields["offset_c"]), command_id=command_id)
    else:
        outcome = service.set_lighting_level(
            facility_id, fields["group_id"], float(fields["level_pct"]), command_id=command_id)
    return _command_result(f"{operation}Response", outcome)


def _envelope(content: Any) -> bytes:
    envelope = etree.Element(f"{{{SOAP_ENV_NS}}}Envelope", nsmap=NSMAP)
    etree.SubElement(envelope, f"{{{SOAP_ENV_NS}}}Body").append(content)
    return bytes(etree.tostring(envelope, xml_declaration=True, encoding="utf-8"))


def fault_envelope(fault: BmsFault) -> bytes:
    """A SOAP 1.1 Fault: ``soapenv:Server`` for failures of the BMS, ``soapenv:Client`` for
    requests that can never succeed as sent."""
    soap_fault = etree.Element(f"{{{SOAP_ENV_NS}}}Fault", nsmap=NSMAP)
    code = "soapenv:Server" if fault.server_side else "soapenv:Client"
    etree.SubElement(soap_fault, "faultcode").text = code
    etree.SubElement(soap_fault, "faultstring").text = fault.message
    detail_parts = [_el("code", text=fault.code), _el("message", text=fault.message)]
    if fault.command_id is not None:
        detail_parts.append(_el("command_id", text=fault.command_id))
    etree.SubElement(soap_fault, "detail").append(_el("BmsFault", *detail_parts))
    return _envelope(soap_fault)


def handle_soap(service: BmsService, body: bytes) -> tuple[int, bytes]:
    """HTTP status and body answering one SOAP request; counts it in ``service.hits``."""
    try:
        operation, fields = parse_request(body)
    except BmsFault as fault:
        service.hits["invalid"] += 1
        return 500, fault_envelope(fault)
    service.hits[operation] += 1
    try:
        return 200, _envelope(dispatch(service, operation, fields))
    except BmsFault as fault:
        return 500, fault_envelope(fault)
    except Exception:
        log.exception("BMS simulator failed on %s", operation)
        return 500, fault_envelope(BmsFault("internal", f"{operation} failed inside the BMS"))
