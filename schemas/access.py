"""Utilities and their credentials: who may send demand-response events for which facilities.

A utility authenticates API calls with API keys (stored as SHA-256 digests, shown once) and signs
its webhooks with an HMAC secret (stored, since verifying an HMAC needs the secret itself)."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr

from schemas.common import Identifier


class Utility(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    utility_id: Identifier
    name: str = Field(min_length=1, max_length=200)
    facility_ids: tuple[Identifier, ...] = Field(
        default=(), description="The facilities enrolled with this utility's DR programs")
    webhook_secret: SecretStr = Field(description="Key of the webhook HMAC signatures")


class ApiKeyRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    utility_id: Identifier
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: AwareDatetime
    revoked_at: AwareDatetime | None = None

    def active(self, now: datetime) -> bool:
        return self.revoked_at is None or self.revoked_at > now
