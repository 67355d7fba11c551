"""The OpenAPI 3.1 document, written from the endpoint declarations and the response models.

OpenAPI 3.1 schemas are JSON Schema 2020-12, which is what pydantic emits, so the models'
schemas go into ``components/schemas`` as they are.

Links come from the parameters' ``sources``: a parameter that says which answer carries its
value gets a link from that answer to every operation taking it (the facility list to each
facility's routes, a created DR event to reading it), so a client, and schemathesis's stateful
phase, chains real ids instead of guessing them. A source naming an operation, a status or a
field that is not declared is refused when the document is built, i.e. at start-up."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.endpoints import UNLIMITED_PATHS, Endpoint, Method, Param, Source
from api.models import Error
from schemas.common import MAX_TIME, MIN_TIME

STANDARD_ERRORS: dict[int, str] = {
    400: "invalid request (a parameter or the body); `details` says which",
    401: "missing or invalid credentials",
    403: "the caller's role or facility scope does not allow this",
    404: "no such facility, meter or resource",
    413: "the request body is too large",
    415: "the request body must be JSON",
    429: "rate limit exceeded; retry after `Retry-After` seconds",
    503: "a store or the identity provider is unavailable; retry shortly",
}
AUTHENTICATED_ERRORS = (401, 403, 429, 503)


TIME_PATTERN = (
    r"^(?:1969|19[7-9][0-9]|2[01][0-9]{2}|2200)-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
    r"(?:[Zz]|[+ -](?:[01][0-9]|2[0-3]):[0-5][0-9])$")
"""The range of a time parameter (``format: date-time`` in its ``Param``), which RFC 3339
alone does not bound: local years 1969 to 2200 (an offset under 24 h moves a supported UTC
time at most a day), in ``api/bounds.py``'s grammar (which also takes seconds left out, a
space for ``T``, and a URL's ``+`` arrived as a space). Every time the server accepts matches
it, so a value that does not is refused; what it admits and the server still refuses (a 31
April, a time outside the range by its offset) is 400 ``invalid_parameter``, as the
description says."""

TIME_DESCRIPTION = (f"RFC 3339 with an offset, from {MIN_TIME.isoformat()} and before "
                    f"{MAX_TIME.isoformat()}; empty or absent: the default")


def _parameter(p: Param) -> dict[str, Any]:
    out: dict[str, Any] = {"name": p.name, "in": p.where,
                           "required": p.required or p.where == "path",
                           "description": p.description, "schema": p.schema}
    if p.schema.get("format") == "date-time":
        out["schema"] = {**p.schema, "pattern": TIME_PATTERN, "description": TIME_DESCRIPTION}
        if p.where == "query":
            out["allowEmptyValue"] = True  # "start=" is the default (api/params.py)
    return out


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def build(endpoints: Iterable[Endpoint], *, title: str, version: str) -> dict[str, Any]:
    endpoints = list(endpoints)
    models: set[type[BaseModel]] = {Error}
    for e in endpoints:
        models.update(m for m in (e.response, e.body) if m is not None)
    _, schemas = models_json_schema(
        [(m, "serialization") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}")
    defs: dict[str, Any] = schemas.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        paths.setdefault(e.path, {})[e.method.lower()] = _operation(e)
    _add_links(endpoints, paths, defs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title, "version": version,
            "description": "Smart Energy Management System API. Authenticate with "
                           "`Authorization: Bearer <JWT>` (RS256; roles viewer, operator, "
                           "facility_manager, energy_manager, utility, admin; scoped to "
                           "facilities), `X-API-Key` for a utility's systems, or a person's "
                           "session cookie from `POST /api/auth/login` (unsafe methods also "
                           "need `X-CSRF-Token`; a person's admin and energy manager see "
                           "their organisation's facilities, not every one). Errors are "
                           "`{error_code, message, details}`.",
        },
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "session": {"type": "apiKey", "in": "cookie", "name": "sems_session",
                            "description": "`__Host-sems_session` when served over TLS"},
            },
        },
    }


def _operation(e: Endpoint) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": _operation_id(e), "summary": e.summary, "tags": [e.tag]}
    if e.description:
        op["description"] = e.description
    if e.roles is None:
        op["security"] = []
    else:
        op["security"] = ([{"session": []}] if e.people_only
                          else [{"bearer": []}, {"apiKey": []}, {"session": []}])
        op["x-roles"] = sorted(r.value for r in e.roles)
        if e.people_only:
            op["x-people-only"] = True
        if e.every_facility:
            op["x-every-facility"] = True
    if e.params:
        op["parameters"] = [_parameter(p) for p in e.params]
    if e.body is not None:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": _ref(e.body)}}}
    ok: dict[str, Any] = {"description": "OK"}
    if e.response is not None:
        ok["content"] = {e.response_type: {"schema": _ref(e.response)}}
    elif e.response_type != "application/json":
        ok["content"] = {e.response_type: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(status): ok for status in e.ok_statuses}
    statuses = set(e.errors)
    if e.roles is not None:
        statuses.update(AUTHENTICATED_ERRORS)
    if e.path not in UNLIMITED_PATHS:
        statuses.add(429)  # the per-address limit comes before authentication
    if e.params:
        statuses.add(400)
    if e.body is not None:
        statuses.update((400, 413, 415))
    for status in sorted(statuses):
        responses[str(status)] = {
            "description": STANDARD_ERRORS.get(status, "error"),
            "content": {"application/json": {"schema": _ref(Error)}},
        }
    op["responses"] = responses
    return op


class LinkError(ValueError):
    """A parameter's ``Source`` that the document cannot link from."""


def _add_links(endpoints: list[Endpoint], paths: dict[str, dict[str, Any]],
               defs: dict[str, Any]) -> None:
    """One link per (answer, operation taking a value from it), named by that operation's id,
    with every parameter the answer supplies."""
    declared = {(e.method, e.path): e for e in endpoints}
    for target in endpoints:
        for param in target.params:
            for source in param.sources:
                links = _links_of(declared, paths, source, param, defs)
                link = links.setdefault(_operation_id(target), {
                    "operationId": _operation_id(target),
                    "description": target.summary,
                    "parameters": {},
                })
                link["parameters"][f"{param.where}.{param.name}"] = \
                    f"$response.body#{source.pointer}"


def _links_of(declared: dict[tuple[Method, str], Endpoint], paths: dict[str, dict[str, Any]],
              source: Source, param: Param, defs: dict[str, Any]) -> dict[str, Any]:
    """The ``links`` of the answer ``source`` names, once it is checked; the answer is copied
    first, as the statuses of one operation share one response object."""
    where = f"parameter {param.name}: source {source.method} {source.path} {source.status}"
    endpoint = declared.get((source.method, source.path))
    if endpoint is None:
        raise LinkError(f"{where}: no such operation")
    if source.status not in endpoint.ok_statuses or endpoint.response is None:
        raise LinkError(f"{where}: the operation answers no body with that status")
    if not _pointer_resolves(_ref(endpoint.response), source.pointer, defs):
        raise LinkError(f"{where}: {source.pointer} is not a field of "
                        f"{endpoint.response.__name__}")
    responses: dict[str, Any] = paths[source.path][source.method.lower()]["responses"]
    status = str(source.status)
    if "links" not in responses[status]:
        responses[status] = {**responses[status], "links": {}}
    links: dict[str, Any] = responses[status]["links"]
    return links


def _pointer_resolves(schema: Mapping[str, Any], pointer: str, defs: dict[str, Any]) -> bool:
    """Whether a JSON pointer names a field the schema declares (through ``$ref``, ``items``
    for a numeric segment, and either branch of an ``anyOf``)."""
    if "$ref" in schema:
        return _pointer_resolves(defs[schema["$ref"].rsplit("/", 1)[-1]], pointer, defs)
    if "anyOf" in schema:
        return any(_pointer_resolves(s, pointer, defs) for s in schema["anyOf"])
    if pointer == "":
        return True
    head, _, rest = pointer[1:].partition("/")
    rest = "/" + rest if rest else ""
    if head.isdigit() and "items" in schema:
        return _pointer_resolves(schema["items"], rest, defs)
    prop = schema.get("properties", {}).get(head.replace("~1", "/").replace("~0", "~"))
    return prop is not None and _pointer_resolves(prop, rest, defs)


def _operation_id(e: Endpoint) -> str:
    return getattr(e.handler, "__name__", "handler")
