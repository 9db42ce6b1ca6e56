"""The base of every config section: typed, validated on assignment, unknown keys refused."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section; a typo in a key is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
