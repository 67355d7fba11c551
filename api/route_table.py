"""Every route module's endpoints in one list, and each module's state in a new app: what
``create_app`` registers and ``api/openapi.py`` documents. Route modules know nothing of each
other or of the app."""

from __future__ import annotations

from aiohttp import web

from api import (
    auth_routes,
    dr_routes,
    facility_routes,
    forecast_routes,
    ops,
    password_reset_routes,
    user_routes,
)
from api.endpoints import Endpoint


def endpoints(*, local_issuer: bool) -> list[Endpoint]:
    """The API's endpoints; ``local_issuer``: this process issues tokens and serves its keys."""
    return [*ops.endpoints(local_issuer=local_issuer), *facility_routes.ENDPOINTS,
            *forecast_routes.ENDPOINTS, *dr_routes.ENDPOINTS, *auth_routes.ENDPOINTS,
            *user_routes.ENDPOINTS, *password_reset_routes.ENDPOINTS]


def setup(app: web.Application) -> None:
    """Each route module's state in a new app (its ``ApiDeps`` already set)."""
    facility_routes.setup(app)
    dr_routes.setup(app)
