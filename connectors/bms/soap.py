"""``BmsClient``: the BMS port over SOAP 1.1, through zeep's ``AsyncClient`` on httpx.

zeep 4.3's only async transport is httpx-based (its aiohttp transport went with zeep 4.0), and
that transport loads the WSDL with a *blocking* ``httpx.Client``. ``open()`` therefore fetches
the WSDL with the async client first and hands zeep the bytes, so opening never blocks the
event loop (a blocking fetch would deadlock against a BMS simulator served by the same loop).

No retry, by design: each call makes one HTTP request (httpx does not retry), bounded by
``timeout_s`` from start to answer. Failed commands are logged (``connectors.bms``); counting
and recording them is for the observers and the caller.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlparse

import httpx
import zeep
import zeep.exceptions
from zeep.proxy import AsyncServiceProxy
from zeep.transports import AsyncTransport

from connectors.bms.observe import report_command
from tables.ports.bms import (
    BmsCommand,
    BmsRequestFailed,
    CommandObserver,
    CommandResult,
    FailureKind,
    LightingGroupInfo,
    PointValue,
    PointValues,
    ZoneInfo,
)

BMS_NS = "urn:sems:bms:1"
BINDING = f"{{{BMS_NS}}}BmsBinding"
DEFAULT_TIMEOUT_S = 5.0


class _NoBlockingClient:
    """Stands in for the blocking httpx.Client zeep would otherwise create and never use."""

    headers: Mapping[str, str] = {}


class _PrefetchedTransport(AsyncTransport):
    """zeep's async transport, serving documents fetched beforehand instead of blocking."""

    def __init__(self, client: httpx.AsyncClient, documents: Mapping[str, bytes]) -> None:
        super().__init__(client=client, wsdl_client=_NoBlockingClient())  # type: ignore[no-untyped-call]
        self._documents = dict(documents)

    def _load_remote_data(self, url: str) -> bytes:
        try:
            return self._documents[url]
        except KeyError:
            raise zeep.exceptions.TransportError(  # type: ignore[no-untyped-call]
                f"the WSDL refers to {url}; only self-contained WSDLs are supported"
            ) from None


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _fault_code(fault: zeep.exceptions.Fault) -> str | None:
    detail: Any = fault.detail
    if detail is None:
        return None
    code: Any = detail.find(f".//{{{BMS_NS}}}code")
    return None if code is None else str(code.text)


def classify(exc: BaseException) -> tuple[FailureKind, str, str | None] | None:
    """(failure kind, message, fault code) of an error a SOAP call raised; None if it is not
    a BMS or network failure (a bug, a cancellation) and should propagate."""
    if isinstance(exc, zeep.exceptions.Fault):
        return "fault", str(exc.message), _fault_code(exc)
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timeout", "no answer from the BMS in time", None
    if isinstance(exc, httpx.TransportError):
        return "transport", f"cannot reach the BMS: {exc!r}", None
    if isinstance(exc, zeep.exceptions.TransportError):
        return "transport", f"HTTP {exc.status_code} from the BMS without a SOAP fault", None
    if isinstance(exc, zeep.exceptions.Error):
        return "protocol", f"unexpected answer from the BMS: {exc}", None
    return None


class BmsClient:
    """A BMS reached at ``wsdl_url`` (``http(s)://...?wsdl``, or a local WSDL file path with
    ``service_url``). Open it with ``open()``/``close()`` or ``async with``."""

    def __init__(
        self,
        wsdl_url: str,
        *,
        service_url: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        observers: Sequence[CommandObserver] = (),
    ) -> None:
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        self.wsdl_url = wsdl_url
        self.service_url = service_url
        self.timeout_s = timeout_s
        self.observers = tuple(observers)
        self._http: httpx.AsyncClient | None = None
        self._service: Any = None

    async def open(self) -> None:
        """Fetch and parse the WSDL; raises ``BmsRequestFailed`` if the BMS cannot be read."""
        if self._http is not None:
            raise RuntimeError("BmsClient is already open")
        http = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s))
        try:
            documents: dict[str, bytes] = {}
            if urlparse(self.wsdl_url).scheme in ("http", "https"):
                documents[self.wsdl_url] = await self._fetch_wsdl(http)
            transport = _PrefetchedTransport(http, documents)
            client = zeep.AsyncClient(self.wsdl_url, transport=transport)  # type: ignore[no-untyped-call]
            if self.service_url is None:
                self._service = client.service
            else:
                # zeep's create_service() answers a blocking proxy even on an AsyncClient.
                binding = client.wsdl.bindings[BINDING]
                self._service = AsyncServiceProxy(  # type: ignore[no-untyped-call]
                    client, binding, address=self.service_url)
        except BaseException:
            await http.aclose()
            raise
        self._http = http

    async def _fetch_wsdl(self, http: httpx.AsyncClient) -> bytes:
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await http.get(self.wsdl_url)
                response.raise_for_status()
                return response.content
        except (TimeoutError, httpx.HTTPError) as exc:
            failure: FailureKind = "timeout" if isinstance(
                exc, TimeoutError | httpx.TimeoutException) else "transport"
            raise BmsRequestFailed(f"cannot read the BMS WSDL at {self.wsdl_url}: {exc!r}",
                                   failure=failure) from exc

    async def close(self) -> None:
        http, self._http = self._http, None
        self._service = None
        if http is not None:
            await http.aclose()

    async def __aenter__(self) -> BmsClient:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(self, operation: str, **params: object) -> Any:
        if self._service is None:
            raise RuntimeError("BmsClient is not open")
        async with asyncio.timeout(self.timeout_s):
            return await getattr(self._service, operation)(**params)

    async def _query(self, operation: str, facility_id: str) -> Any:
        try:
            return await self._call(operation, facility_id=facility_id)
        except Exception as exc:
            classified = classify(exc)
            if classified is None:
                raise
            failure, message, code = classified
            raise BmsRequestFailed(f"BMS {operation}({facility_id}) failed ({failure}): "
                                   f"{message}", failure=failure, fault_code=code) from exc

    async def list_zones(self, facility_id: str) -> list[ZoneInfo]:
        zones = await self._query("ListZones", facility_id)
        return [ZoneInfo(str(z.zone_id), float(z.setpoint_offset_c), float(z.max_offset_c),
                         float(z.rated_kw)) for z in zones or ()]

    async def list_lighting_groups(self, facility_id: str) -> list[LightingGroupInfo]:
        groups = await self._query("ListLightingGroups", facility_id)
        return [LightingGroupInfo(str(g.group_id), float(g.level_pct), float(g.rated_kw))
                for g in groups or ()]

    async def get_point_values(self, facility_id: str) -> PointValues:
        answer = await self._query("GetPointValues", facility_id)
        points = tuple(PointValue(str(p.point_id), float(p.value), str(p.unit))
                       for p in answer.point or ())
        return PointValues(answer.at.astimezone(UTC), points)

    async def set_zone_setpoint_offset(
        self, facility_id: str, zone_id: str, offset_c: float, *, command_id: str
    ) -> CommandResult:
        command = BmsCommand(command_id, facility_id, "zone_setpoint_offset", zone_id,
                             offset_c, datetime.now(UTC))
        return await self._command(command, "SetZoneSetpointOffset", zone_id=zone_id,
                                   offset_c=offset_c)

    async def set_lighting_level(
        self, facility_id: str, group_id: str, level_pct: float, *, command_id: str
    ) -> CommandResult:
        command = BmsCommand(command_id, facility_id, "lighting_level", group_id, level_pct,
                             datetime.now(UTC))
        return await self._command(command, "SetLightingLevel", group_id=group_id,
                                   level_pct=level_pct)

    async def _command(self, command: BmsCommand, operation: str, **params: object
                       ) -> CommandResult:
        started = time.perf_counter()
        try:
            answer = await self._call(operation, facility_id=command.facility_id,
                                      command_id=command.command_id, **params)
        except Exception as exc:
            classified = classify(exc)
            if classified is None:
                raise
            result = failed_result(command.command_id, *classified)
        else:
            result = result_from_answer(command.command_id, answer)
        report_command(command, result, time.perf_counter() - started, self.observers)
        return result


def failed_result(command_id: str, failure: FailureKind, message: str, fault_code: str | None
                  ) -> CommandResult:
    return CommandResult(command_id, False, None, message, failure, fault_code)


def result_from_answer(command_id: str, answer: Any) -> CommandResult:
    """A CommandResult from zeep's CommandResult object; a mismatched id is a protocol error."""
    if str(answer.command_id) != command_id:
        return failed_result(command_id, "protocol",
                             f"the BMS answered for command {answer.command_id}", None)
    accepted = bool(answer.accepted)
    reason = None if answer.reason is None else str(answer.reason)
    return CommandResult(
        command_id=command_id,
        accepted=accepted,
        applied_at=_utc(answer.applied_at),
        error=None if accepted else (reason or "the BMS did not accept the command"),
        failure=None if accepted else "rejected",
        replayed=bool(answer.replayed),
    )


__all__ = ["DEFAULT_TIMEOUT_S", "BmsClient", "classify"]

