"""What the identity and session adapters refuse before a value reaches their server, so that
every backend refuses it alike (issue 16):

- a naive ``datetime`` (PostgreSQL read one as UTC, SQLite's epoch arithmetic as local time);
- a NUL character in any text (PostgreSQL cannot store one and raised a raw ``DataError``;
  SQLite stored it);
- a record that is not valid: one made with ``model_copy(update=...)`` skips pydantic's
  validation, so it is validated again here (a raw mixed-case email is normalised, an
  invalid value refused).

``checked_inputs`` wraps every public coroutine method of an adapter class; the refusal is
``Invalid`` (a ``ValueError`` and an ``IdentityError``), raised before any I/O.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from schemas.identity import account_key
from tables.ports.identity import Invalid

C = TypeVar("C", bound=type)


def checked(value: Any, name: str) -> Any:
    """``value`` as the adapter should use it (a record validated again), or ``Invalid``."""
    if isinstance(value, str):
        if "\x00" in value:
            raise Invalid(f"{name} contains a NUL character")
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise Invalid(f"{name} is a naive datetime: give an aware one (e.g. in UTC)")
        return value
    if isinstance(value, BaseModel):
        _no_nul(value.model_dump(), name)
        try:
            return type(value).model_validate(value.model_dump())
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}"
                                 for e in exc.errors())
            raise Invalid(f"{name} is not a valid {type(value).__name__}: {problems}") \
                from None
    if isinstance(value, list | tuple):
        return type(value)(checked(item, name) for item in value)
    return value


def _no_nul(value: Any, name: str) -> None:
    if isinstance(value, str):
        checked(value, name)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _no_nul(key, name)
            _no_nul(item, f"{name}.{key}")
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _no_nul(item, name)


def _wrap(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    signature = inspect.signature(method)

    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        for name, value in list(bound.arguments.items())[1:]:  # not self
            bound.arguments[name] = checked(value, name)
        return await method(*bound.args, **bound.kwargs)

    return wrapper


def checked_inputs(cls: C) -> C:
    """The class, each of its public coroutine methods (its own and inherited) checking its
    arguments first."""
    for name in dir(cls):
        method = getattr(cls, name)
        if not name.startswith("_") and inspect.iscoroutinefunction(method):
            setattr(cls, name, _wrap(method))
    return cls


def sign_in_account(account: str) -> str:
    """``schemas.identity.account_key``, refused as ``Invalid`` (before any transaction)."""
    try:
        return account_key(account)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
