"""The OpenAPI document matches the running API: every route is in it, and a schemathesis run
against the live product (``sems run``) finds no server error and no response that breaks it,
with its stateful phase following the document's links (the facility list to each facility's
routes, a created DR event to reading it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
import requests
from jsonschema import Draft202012Validator

from tests.servers import free_port, spawn, stop_process, wait_until

pytestmark = pytest.mark.e2e

SEMS = [sys.executable, "-m", "streams.cli"]
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
ROOT = Path(__file__).resolve().parents[2]
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
Caller = Literal["admin", "viewer", "utility"]

ENROLLED = ("fac-001", "fac-002")
"""The utility's facilities; fac-003 is outside its scope (403 facility_forbidden)."""

PEOPLE_ONLY = ("GET /api/users", "POST /api/users", "PATCH /api/users/{user_id}",
               "PUT /api/users/{user_id}/facilities", "GET /api/sessions",
               "DELETE /api/sessions", "DELETE /api/sessions/{session_id}", "GET /api/audit",
               "POST /api/users/{user_id}/password-reset")
"""Within a signed-in person's organisation: every token and key is refused (403)."""
REFUSED: dict[Caller, tuple[str, ...]] = {
    "admin": PEOPLE_ONLY,
    "viewer": ("GET /metrics", "GET /api/dead-letters", "POST /api/dr-events", *PEOPLE_ONLY),
    "utility": ("GET /metrics", "GET /api/dead-letters", *PEOPLE_ONLY),
}
"""Operations the caller's role may not call: every answer is 403, which is what is tested
there, so schemathesis's warning that they "returned only 401/403" is silenced for them."""

DR_LINK = "POST /api/dr-events -> [201] get_dr_event -> GET /api/dr-events/{dr_event_id}"
FACILITY_LINKS = {f"GET /api/facilities -> [200] {op} -> GET /api/facilities/{{facility_id}}/"
                  f"{route}" for op, route in (("current", "current"), ("rollups", "rollups"),
                                               ("facility_forecast", "forecast"),
                                               ("list_dr_events", "dr-events"))}


class Live:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data = workdir / "data"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SEMS_")}
        # The fuzzer is one very busy caller from one address, sending many bad credentials on
        # purpose: neither the per-credential nor the per-address limit in its way (both are
        # tested in tests/integration/test_api_hostile.py; their 429 is in the spec). The
        # same for sign-in's own limits per account and per address, and its lock-out after
        # failures (tests/integration/test_api_sign_in.py): with them, nearly every generated
        # sign-in is a 429 or 423 and the logic behind stays untested.
        self.env.update(SEMS_API_RATE_PER_S="100000", SEMS_API_RATE_BURST="100000",
                        SEMS_API_CLIENT_RATE_PER_S="1000000",
                        SEMS_API_CLIENT_RATE_BURST="1000000",
                        SEMS_SIGN_IN_ACCOUNT_PER_MIN="10000",
                        SEMS_SIGN_IN_ADDRESS_PER_MIN="100000",
                        SEMS_SIGN_IN_LOCKOUT_AFTER="100")
        self.admin = self.cli("token", "create", "--role", "admin")
        self.viewer = self.cli("token", "create", "--role", "viewer", "--facility", "fac-001")
        self.utility_key = ""
        """A utility's X-API-Key, made once ``sems run`` has stored the facilities."""
        self.proc = spawn(
            [*SEMS, "run", "--port", str(self.port), "--data-dir", str(self.data),
             "--backfill-s", "900"], env=self.env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)

    def cli(self, *args: str) -> str:
        return subprocess.run([*SEMS, *args, "--data-dir", str(self.data)], env=self.env,
                              check=True, capture_output=True, text=True).stdout.strip()

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"sems run exited with {self.proc.returncode}")
        try:
            r = requests.get(f"{self.base}/api/facilities/fac-001/rollups",
                             headers={"Authorization": f"Bearer {self.admin}"}, timeout=1)
        except requests.ConnectionError:
            return False
        return r.status_code == 200 and bool(r.json()["rollups"])

    def header(self, who: Caller) -> str:
        if who == "utility":
            return f"X-API-Key: {self.utility_key}"
        return f"Authorization: Bearer {self.admin if who == 'admin' else self.viewer}"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    api = Live(tmp_path_factory.mktemp("spec"))
    try:
        wait_until(api.ready, timeout_s=90, what="sems run with rollups to serve")
        api.cli("utility", "add", "gridco", "--name", "GridCo",
                *(arg for f in ENROLLED for arg in ("--facility", f)))
        api.utility_key = api.cli("utility", "key", "create", "gridco").splitlines()[-1]
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
        ("POST", "/api/auth/login"), ("POST", "/api/auth/logout"), ("GET", "/api/me"),
        ("POST", "/api/auth/password-reset"),
        *((op.split(" ")[0], op.split(" ")[1]) for op in PEOPLE_ONLY),
    }
    # Creating DR events and reading one are exercised in tests/e2e/test_demand_response.py;
    # signing in in tests/integration/test_api_sign_in.py, password resets in
    # tests/integration/test_api_password_reset.py.
    people_only = {(op.split(" ")[0], op.split(" ")[1]) for op in PEOPLE_ONLY}
    for method, path in documented - people_only - {
                                      ("POST", "/webhooks/utility/dr-notification"),
                                      ("POST", "/api/auth/login"),
                                      ("POST", "/api/auth/password-reset"),
                                      ("POST", "/api/dr-events"),
                                      ("GET", "/api/dr-events/{dr_event_id}")}:
        r = requests.request(method, live.base + path.replace("{facility_id}", "fac-001"),
                             headers={"Authorization": f"Bearer {live.admin}"}, timeout=5)
        assert r.status_code == 200, (method, path, r.text)
    every_op = spec["paths"].values()
    assert all(op.get("security") is not None for ops in every_op for op in ops.values())


DR_FIRST_START = "SPEC_TEST_DR_FIRST_START"
"""The environment variable that gives the schemathesis process its first DR window."""


def dr_window(first: datetime, k: int) -> tuple[str, str]:
    """The k-th of a run's DR event windows: one minute each, two minutes apart, so that
    no two overlap, from ``first`` on (an hour ahead: events start at most 7 days ahead,
    ends in the future, within 24 h, in whole minutes)."""
    start = first + timedelta(minutes=2 * k)
    return start.isoformat(), (start + timedelta(minutes=1)).isoformat()


def register_hooks(first: datetime) -> None:
    """What the spec cannot say about ``POST /api/dr-events`` bodies (the time rules of
    ``dr_window``, which depend on the time of the request and on both fields) schemathesis
    cannot guess:
    each positive body gets a window of its own, so that it is created (201, or 403/404 for
    a facility outside the caller's scope or made up) and the stateful phase can follow the
    link from it. Negative bodies are left as generated; the time rules themselves are
    tested in tests/integration/test_dr_intake.py."""
    import itertools

    import schemathesis
    from schemathesis.core.parameters import ParameterLocation

    windows = itertools.count()

    @schemathesis.hook
    def map_case(context: Any, case: Any) -> Any:
        meta = case.meta
        if (case.operation.label != "POST /api/dr-events" or not isinstance(case.body, dict)
                or (meta is not None and meta.is_negative_at(ParameterLocation.BODY))):
            return case
        start, end = dr_window(first, next(windows))
        case.body = {**case.body, "event_start": start, "event_end": end}
        return case


if os.environ.get("SCHEMATHESIS_HOOKS") == __file__ and DR_FIRST_START in os.environ:
    # This file is also schemathesis's hooks module (SCHEMATHESIS_HOOKS, set for its process
    # by the test below): the hooks live beside the test that needs them.
    register_hooks(datetime.fromisoformat(os.environ[DR_FIRST_START]))


def toml_value(value: Any) -> str:
    """The few TOML values the config uses: booleans, numbers, strings, lists, inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string of ASCII is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


NOT_STATEFUL = {"stateful": {"enabled": False}}
"""An operation's phases without the stateful one (its transitions are not drawn)."""


def schemathesis_config(who: Caller) -> str:
    """``schemathesis.toml`` for one caller: every warning fails the run but the ones
    silenced here, each for its reason."""
    operations: list[dict[str, Any]] = [
        # Facility ids drawn from real ones; one in ten is still made up (404).
        {"include-name": "POST /api/dr-events", "parameters": {
            "body.facility_id": {"dictionary": "facilities", "probability": 0.9}}},
        # HMAC-signed by the utility's secret, which schemathesis cannot compute: every
        # request is 401 invalid_signature, which is what this run can check. Signed
        # notifications are tested in tests/e2e/test_demand_response.py and
        # tests/integration/test_dr_intake.py.
        {"include-name": "POST /webhooks/utility/dr-notification", "warnings": False},
        # The body's one-time token is one schemathesis cannot know: every positive request
        # is 400 invalid_reset_token, which is what this run can check. Resets are tested in
        # tests/integration/test_api_password_reset.py.
        {"include-name": "POST /api/auth/password-reset", "warnings": False,
         "phases": NOT_STATEFUL},
        # Only ever 403 for this caller: no chain of calls through them can reach further,
        # and the stateful phase's steps are kept for the links that can.
        *({"include-name": name, "warnings": False, "phases": NOT_STATEFUL}
          for name in REFUSED[who]),
    ]
    lines = [
        "[warnings]",
        "fail-on = true",
        f"[dictionaries.facilities]\nvalues = {toml_value(['fac-001', 'fac-002', 'fac-003'])}",
    ]
    for op in operations:
        lines.append("[[operations]]")
        lines += [f"{key} = {toml_value(value)}" for key, value in op.items()]
    return "\n".join(lines) + "\n"


def links_followed(ndjson: Path) -> set[str]:
    """The links the stateful phase followed, from schemathesis's event stream."""
    followed: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            transition = node.get("transition")
            if isinstance(transition, dict) and node.get("is_transition_applied"):
                followed.add(transition["id"])
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    for line in ndjson.read_text().splitlines():
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if finished is not None and finished["phase"] == "stateful":
            walk(finished["recorder"])
    return followed


@pytest.mark.parametrize(("who", "day"), [("admin", 0), ("viewer", 1), ("utility", 2)])
def test_schemathesis_finds_no_server_error_and_no_spec_violation(
        live: Live, tmp_path: Path, who: Caller, day: int) -> None:
    """Positive and negative inputs for every operation (examples, coverage, fuzzing and
    stateful phases) as an admin, as a viewer scoped to one facility (most of whose requests
    must be refused, in the documented shape) and as a utility's systems with their API key
    (the DR routes, for the facilities enrolled with it). Credentials are given, not
    generated (``--generation-with-security-parameters false``): a made-up X-API-Key beside a
    valid token would only test which of the two is read first, and hide the rest behind a
    401; missing and broken credentials are still sent (the ``ignored_auth`` check). Any
    warning fails the run, except the ones silenced above, each for its reason. Generation is
    deterministic (derandomised: the same cases every run, so a red run replays); without
    ``--generation-deterministic`` and with ``--seed N``, schemathesis explores further."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(schemathesis_config(who))
    reports = tmp_path / "reports"
    # Each run's DR windows on a day of their own (they stay stored between runs).
    first = (datetime.now(UTC).replace(second=0, microsecond=0)
             + timedelta(hours=1, days=day))
    result = subprocess.run(
        [SCHEMATHESIS, "--config-file", str(config), "run", f"{live.base}/api/openapi.json",
         "-H", live.header(who), "--checks", "all",
         "--exclude-checks", "positive_data_acceptance", "--max-examples", "30",
         "--generation-deterministic", "--no-color",
         "--generation-with-security-parameters", "false",
         "--report", "ndjson", "--report-dir", str(reports)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": __file__,
             "PYTHONPATH": str(ROOT), DR_FIRST_START: first.isoformat()})
    assert result.returncode == 0, result.stdout[-6000:]
    followed = links_followed(next(reports.glob("*.ndjson")))
    assert FACILITY_LINKS <= followed, (sorted(followed), result.stdout[-3000:])
    if who != "viewer":
        assert DR_LINK in followed, (sorted(followed), result.stdout[-3000:])
