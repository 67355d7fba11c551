"""The OpenAPI 3.1 document, written from the endpoint declarations and the response models.

OpenAPI 3.1 schemas are JSON Schema 2020-12, which is what pydantic emits, so the models'
schemas go into ``components/schemas`` as they are."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.endpoints import UNLIMITED_PATHS, Endpoint
from api.models import Error

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
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        paths.setdefault(e.path, {})[e.method.lower()] = _operation(e)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title, "version": version,
            "description": "Smart Energy Management System API. Authenticate with "
                           "`Authorization: Bearer <JWT>` (RS256; roles viewer, "
                           "facility_manager, utility, admin; scoped to facilities), or "
                           "`X-API-Key` for a utility's systems. Errors are "
                           "`{error_code, message, details}`.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


def _operation(e: Endpoint) -> dict[str, Any]:
    name = getattr(e.handler, "__name__", "handler")
    op: dict[str, Any] = {"operationId": name, "summary": e.summary, "tags": [e.tag]}
    if e.description:
        op["description"] = e.description
    if e.roles is None:
        op["security"] = []
    else:
        op["security"] = [{"bearer": []}, {"apiKey": []}]
        op["x-roles"] = sorted(r.value for r in e.roles)
    if e.params:
        op["parameters"] = [
            {"name": p.name, "in": p.where, "required": p.required or p.where == "path",
             "description": p.description, "schema": p.schema}
            for p in e.params
        ]
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
