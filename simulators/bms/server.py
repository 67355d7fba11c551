"""A simulated building management system: SOAP 1.1 over HTTP, contract in ``bms.wsdl``.

The behaviour is ``simulators.bms.service.BmsService`` (it commands the building models the
meter simulator reads), the envelopes are ``simulators.bms.soap``; this module serves them on
aiohttp, in-process (``BmsServer``) or standalone (``python -m simulators.bms --port 8085``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from types import TracebackType

from aiohttp import web

from simulators.bms.service import (
    BmsFault,
    BmsService,
    CommandOutcome,
    FaultInjection,
    LightingGroupState,
    PointValue,
    ZoneState,
)
from simulators.bms.soap import handle_soap, wsdl_for

__all__ = [
    "BMS_PATH",
    "BmsFault",
    "BmsServer",
    "BmsService",
    "CommandOutcome",
    "FaultInjection",
    "LightingGroupState",
    "PointValue",
    "ResponseGate",
    "ZoneState",
    "create_bms_app",
]

log = logging.getLogger(__name__)

BMS_PATH = "/bms/soap"


class ResponseGate:
    """Holds responses back while stalled: a BMS that applied a command but whose answer is
    lost, so clients time out (the test for "no retry")."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()

    def stall(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def passed(self) -> None:
        await self._open.wait()


SERVICE_KEY = web.AppKey("bms_service", BmsService)
GATE_KEY = web.AppKey("bms_gate", ResponseGate)


async def _get_wsdl(request: web.Request) -> web.Response:
    if "wsdl" not in request.query:
        raise web.HTTPNotFound(text="GET ?wsdl for the service description; POST SOAP here\n")
    request.app[SERVICE_KEY].hits["wsdl"] += 1
    location = str(request.url.with_query(None))
    return web.Response(body=wsdl_for(location), content_type="text/xml", charset="utf-8")


async def _post_soap(request: web.Request) -> web.Response:
    status, body = handle_soap(request.app[SERVICE_KEY], await request.read())
    await request.app[GATE_KEY].passed()
    return web.Response(status=status, body=body, content_type="text/xml", charset="utf-8")


def create_bms_app(service: BmsService, *, gate: ResponseGate | None = None) -> web.Application:
    app = web.Application()
    app[SERVICE_KEY] = service
    app[GATE_KEY] = gate if gate is not None else ResponseGate()
    app.router.add_get(BMS_PATH, _get_wsdl)
    app.router.add_post(BMS_PATH, _post_soap)
    return app


class BmsServer:
    """The service on an aiohttp server in the running event loop; port 0 picks a free one."""

    def __init__(self, service: BmsService, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.service = service
        self.host = host
        self.port = port
        self.gate = ResponseGate()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        return f"http://{host}:{self.port}{BMS_PATH}"

    @property
    def wsdl_url(self) -> str:
        return f"{self.url}?wsdl"

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("BMS server already started")
        runner = web.AppRunner(create_bms_app(self.service, gate=self.gate),
                               shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = int(runner.addresses[0][1])
        self._runner = runner
        log.info("BMS simulator serving SOAP at %s", self.url)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            self.gate.release()
            await runner.cleanup()

    async def __aenter__(self) -> BmsServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def _serve(args: argparse.Namespace) -> None:
    from simulators.fleet import build_fleet

    fleet = build_fleet(facilities=args.facilities,
                        meters_per_facility=args.meters_per_facility, seed=args.seed)
    async with BmsServer(BmsService(fleet.models), host=args.host, port=args.port) as server:
        print(f"BMS simulator: {server.wsdl_url}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.bms",
        description="Serve the simulated BMS (SOAP 1.1) for a simulated fleet. Standalone, its "
        "commands do not reach a meter simulator in another process.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8085)
    parser.add_argument("--facilities", type=int, default=3)
    parser.add_argument("--meters-per-facility", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
