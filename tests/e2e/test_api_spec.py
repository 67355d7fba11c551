"""The OpenAPI document matches the running API: every route is in it, and a schemathesis run
against the live product (``sems run``) finds no server error and no response that breaks it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from jsonschema import Draft202012Validator

from tests.servers import free_port, spawn, stop_process, wait_until

pytestmark = pytest.mark.e2e

SEMS = [sys.executable, "-m", "streams.cli"]
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


class Live:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data = workdir / "data"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SEMS_")}
        # The fuzzer is one very busy caller from one address, sending many bad credentials on
        # purpose: neither the per-credential nor the per-address limit in its way (both are
        # tested in tests/integration/test_api_hostile.py; their 429 is in the spec).
        self.env.update(SEMS_API_RATE_PER_S="100000", SEMS_API_RATE_BURST="100000",
                        SEMS_API_CLIENT_RATE_PER_S="1000000",
                        SEMS_API_CLIENT_RATE_BURST="1000000")
        self.admin = self.token("--role", "admin")
        self.viewer = self.token("--role", "viewer", "--facility", "fac-001")
        self.proc = spawn(
            [*SEMS, "run", "--port", str(self.port), "--data-dir", str(self.data),
             "--backfill-s", "900"], env=self.env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)

    def token(self, *args: str) -> str:
        return subprocess.run([*SEMS, "token", "create", *args, "--data-dir", str(self.data)],
                              env=self.env, check=True, capture_output=True,
                              text=True).stdout.strip()

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"sems run exited with {self.proc.returncode}")
        try:
            r = requests.get(f"{self.base}/api/facilities/fac-001/rollups",
                             headers={"Authorization": f"Bearer {self.admin}"}, timeout=1)
        except requests.ConnectionError:
            return False
        return r.status_code == 200 and bool(r.json()["rollups"])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    api = Live(tmp_path_factory.mktemp("spec"))
    try:
        wait_until(api.ready, timeout_s=90, what="sems run with rollups to serve")
        yield api
    finally:
        stop_process(api.proc, timeout_s=30, sig=signal.SIGINT)


def test_the_spec_is_openapi_31_and_names_exactly_the_routes(live: Live) -> None:
    spec = requests.get(f"{live.base}/api/openapi.json", timeout=5).json()
    assert spec["openapi"] == "3.1.0"
    for schema in spec["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)  # 3.1 schemas are JSON Schema 2020-12
    documented = {(method.upper(), path) for path, ops in spec["paths"].items()
                  for method in ops if method in HTTP_METHODS}
    # The router serves exactly the declared endpoints (tests/integration/test_api_auth.py);
    # here the live server answers each documented operation.
    assert documented == {
        ("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/api/openapi.json"),
        ("GET", "/.well-known/jwks.json"), ("GET", "/api/facilities"),
        ("GET", "/api/facilities/{facility_id}/current"),
        ("GET", "/api/facilities/{facility_id}/rollups"), ("GET", "/api/dead-letters"),
        ("GET", "/api/facilities/{facility_id}/forecast"),
        ("POST", "/webhooks/utility/dr-notification"), ("POST", "/api/dr-events"),
        ("GET", "/api/dr-events/{dr_event_id}"),
        ("GET", "/api/facilities/{facility_id}/dr-events"),
    }
    # Creating DR events and reading one are exercised in tests/e2e/test_demand_response.py.
    for method, path in documented - {("POST", "/webhooks/utility/dr-notification"),
                                      ("POST", "/api/dr-events"),
                                      ("GET", "/api/dr-events/{dr_event_id}")}:
        r = requests.request(method, live.base + path.replace("{facility_id}", "fac-001"),
                             headers={"Authorization": f"Bearer {live.admin}"}, timeout=5)
        assert r.status_code == 200, (method, path, r.text)
    every_op = spec["paths"].values()
    assert all(op.get("security") is not None for ops in every_op for op in ops.values())


@pytest.mark.parametrize("who", ["admin", "viewer"])
def test_schemathesis_finds_no_server_error_and_no_spec_violation(live: Live, who: str) -> None:
    """Positive and negative inputs for every operation (examples, coverage, fuzzing and
    stateful phases), with an admin token and with a viewer scoped to one facility (most of
    whose requests must be refused, in the documented shape). The seed is fixed so that a red
    run can be replayed; `st run ... --seed N` explores further."""
    token = live.admin if who == "admin" else live.viewer
    result = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run",
         f"{live.base}/api/openapi.json", "-H", f"Authorization: Bearer {token}",
         "--checks", "all", "--exclude-checks", "positive_data_acceptance",
         "--max-examples", "30", "--seed", "20261127", "--no-color",
         "--generation-database", "none"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "NO_COLOR": "1"})
    assert result.returncode == 0, result.stdout[-6000:]
