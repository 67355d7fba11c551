"""What the people routes share (issue 16): the signed-in caller, the ``user_id`` path
parameter, the account rules' refusals as the API answers them (never a 500), and the
limits on credential attempts (sign-ins, password resets)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from agents.accounts import NotAllowed
from agents.identity.passwords import PasswordRejected
from api.context import PRINCIPAL
from api.endpoints import Param
from api.errors import ApiError
from api.ratelimit import RateLimiter
from schemas.identity import PersonRole
from tables.ports.identity import Conflict, EmailTaken, LastAdmin, NotFound, WrongOrganisation

USER_ID = Param("user_id", "path", {"type": "string", "maxLength": 64,
                                    "pattern": r"^[A-Za-z0-9_.-]+$"},
                "a member of the caller's organisation", required=True)


@contextmanager
def domain_errors() -> Iterator[None]:
    """The account rules' refusals as the API answers them (never a 500)."""
    try:
        yield
    except NotAllowed as exc:
        raise ApiError(403, "role_not_grantable", str(exc)) from None
    except PasswordRejected as exc:
        raise ApiError(400, "weak_password", exc.message, {"problem": exc.problem}) from None
    except WrongOrganisation as exc:
        raise ApiError(400, "wrong_organisation", str(exc),
                       {"facility_ids": list(exc.facility_ids)}) from None
    except EmailTaken as exc:
        raise ApiError(409, "email_taken", str(exc)) from None
    except LastAdmin as exc:
        raise ApiError(409, "last_admin", str(exc)) from None
    except Conflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    except NotFound as exc:
        raise ApiError(404, "user_not_found", f"{exc.what} is not a member of this "
                       "organisation") from None


def caller(request: web.Request) -> tuple[str, str, PersonRole, str]:
    """(organisation, actor user id, actor role, client address) of a signed-in caller."""
    principal = request[PRINCIPAL]
    if principal.organisation_id is None or principal.user_id is None:
        raise ApiError(403, "forbidden", "this route is for signed-in people")
    return (principal.organisation_id, principal.user_id, PersonRole(principal.role.value),
            client_address(request))


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


def limit_sign_in(limiter: RateLimiter, key: str, what: str) -> None:
    """429 ``sign_in_rate_limited`` when ``key`` (an account, an address) has spent its
    budget of credential attempts."""
    wait_s = limiter.take(key, time.monotonic())
    if wait_s > 0:
        retry = math.ceil(wait_s)
        raise ApiError(429, "sign_in_rate_limited", f"too many sign-ins {what}; retry later",
                       {"retry_after_s": retry}, headers={"Retry-After": str(retry)})
