"""policy.yaml schema. Minimal until the policy capability lands; owned by policies/."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Policy"]


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
