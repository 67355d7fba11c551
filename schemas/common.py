"""Field types shared by the contracts."""

from typing import Annotated

from pydantic import Field

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Identifiers are safe as MQTT topic levels, Kafka keys and URL path segments."""

Identifier = Annotated[str, Field(pattern=ID_PATTERN, description="1-64 of [A-Za-z0-9_.-]")]
