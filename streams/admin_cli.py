"""``sems token create`` and ``sems utility ...``: credentials for the API."""

from __future__ import annotations

import argparse
import math
import secrets
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import SecretStr, ValidationError

from api import apikeys
from api.principal import Role
from schemas.access import Utility
from streams.settings import Settings
from tables.ports.store import Store

MAX_TTL_S = 366 * 24 * 3600.0
"""A year and a day: a local token cannot be revoked, so it must expire."""


def ttl_s(raw: str) -> float:
    """``--ttl-s``: a positive, finite, bounded number of seconds (a negative one would mint
    a token that is expired already)."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or not 1.0 <= value <= MAX_TTL_S:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_TTL_S:.0f} s")
    return value


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = sub.add_parser("token", help="tokens of the local issuer (embedded default)")
    token_sub = token.add_subparsers(dest="action", required=True)
    create = token_sub.add_parser("create", help="print a signed JWT for the API")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--facility", dest="facilities", action="append", default=[],
                        metavar="ID", help="a facility the token may see (repeat; '*' = all)")
    create.add_argument("--subject", default="sems-cli", help="who the token is for (sub)")
    create.add_argument("--ttl-s", type=ttl_s, default=12 * 3600.0,
                        help=f"how long the token is valid, 1 to {MAX_TTL_S:.0f} s")
    create.add_argument("--data-dir", type=Path)

    utility = sub.add_parser("utility", help="utilities that send DR events, and their keys")
    utility_sub = utility.add_subparsers(dest="action", required=True)
    add = utility_sub.add_parser("add", help="register or update a utility; prints a new "
                                             "webhook secret when it is new or --rotate-secret")
    add.add_argument("utility_id")
    add.add_argument("--name", required=True)
    add.add_argument("--facility", dest="facilities", action="append", default=[],
                     metavar="ID", help="an enrolled facility (repeat)")
    add.add_argument("--rotate-secret", action="store_true")
    key = utility_sub.add_parser("key", help="API keys of a utility")
    key.add_argument("key_action", choices=["create", "revoke"])
    key.add_argument("ident", metavar="UTILITY_ID|KEY_ID")
    for p in (add, key):
        p.add_argument("--data-dir", type=Path)
        p.add_argument("--profile", choices=["embedded", "production"])


def create_token(settings: Settings, args: argparse.Namespace) -> int:
    from streams.security import local_issuer

    if settings.auth_jwks_url:
        print("sems: tokens come from your identity provider (SEMS_AUTH_JWKS_URL is set)",
              file=sys.stderr)
        return 2
    role = Role(args.role)
    if role is not Role.ADMIN and not args.facilities:
        print(f"sems: a {role.value} token needs --facility (or --facility '*')",
              file=sys.stderr)
        return 2
    token = local_issuer(settings).create_token(
        subject=args.subject, role=role, facility_ids=args.facilities,
        issuer=settings.auth_issuer, audience=settings.auth_audience, now=datetime.now(UTC),
        ttl=timedelta(seconds=args.ttl_s), role_claim=settings.auth_role_claim,
        facilities_claim=settings.auth_facilities_claim)
    print(token)
    return 0


async def utility(settings: Settings, args: argparse.Namespace) -> int:
    from core.metrics import Metrics
    from streams.stores import build_store

    store = build_store(settings, Metrics())
    await store.open()
    try:
        if args.action == "add":
            return await _add_utility(store, args)
        if args.key_action == "create":
            if await store.utility(args.ident) is None:
                print(f"sems: no utility {args.ident!r}; add it first", file=sys.stderr)
                return 2
            issued = apikeys.issue(args.ident, now=datetime.now(UTC))
            await store.add_api_key(issued.record)
            print(f"API key {issued.record.key_id} for {args.ident} (shown once; send it as "
                  f"X-API-Key):\n{issued.key}")
            return 0
        if not await store.revoke_api_key(args.ident, at=datetime.now(UTC)):
            print(f"sems: no active key {args.ident!r}", file=sys.stderr)
            return 2
        print(f"revoked {args.ident} (API processes stop accepting it within 10 s)")
        return 0
    finally:
        await store.close()


async def _add_utility(store: Store, args: argparse.Namespace) -> int:
    existing = await store.utility(args.utility_id)
    fresh = existing is None or args.rotate_secret
    secret = (existing.webhook_secret if existing is not None and not args.rotate_secret
              else SecretStr(secrets.token_urlsafe(32)))
    known = {f.facility_id for f in await store.facilities()}
    unknown = sorted(set(args.facilities) - known)
    if unknown:
        print(f"sems: unknown facilities: {', '.join(unknown)}", file=sys.stderr)
        return 2
    try:
        u = Utility(utility_id=args.utility_id, name=args.name,
                    facility_ids=tuple(sorted(set(args.facilities))), webhook_secret=secret)
    except ValidationError as exc:
        print(f"sems: {exc}", file=sys.stderr)
        return 2
    await store.upsert_utility(u)
    print(f"utility {u.utility_id}: {len(u.facility_ids)} enrolled facilities")
    if fresh:
        print(f"webhook secret (shown once; sign webhooks with HMAC-SHA256):\n"
              f"{secret.get_secret_value()}")
    return 0
