"""The strict schema every params.yaml section is built on: the section base, validation into one
UserError line, and the constrained number types.

Imports nothing of the project but the error type, so params.yaml's sections (pipeline.config) and
each model's `arch:` keys (pipeline/models/<name>.py) share it without importing each other.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from pipeline.runtime import UserError

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Seed = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]  # open interval (0, 1)
FractionOrZero = Annotated[float, Field(ge=0, lt=1)]  # [0, 1): a dropout, a momentum


class Section(BaseModel):
    """A params.yaml section: strict types, no unknown keys, finite numbers (no .inf or .nan), immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        # Checked here rather than by extra="forbid" so the message can list the valid keys.
        if isinstance(data, dict):
            unknown = [key for key in data if key not in cls.model_fields]
            if unknown:
                raise PydanticCustomError("unknown_key", "unknown key; valid keys: {valid}",
                                          {"key": unknown[0], "valid": ", ".join(cls.model_fields)})
        return data


S = TypeVar("S", bound=BaseModel)


def validate(cls: type[S], data: Any, prefix: str = "") -> S:
    """Build `cls` from plain data, or raise one UserError line naming the (dotted) key at fault."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        # An unknown key is reported at its parent's location; name the key itself.
        loc = (*first["loc"], first["ctx"]["key"]) if first["type"] == "unknown_key" else first["loc"]
        key = ".".join(str(part) for part in (prefix, *loc) if part != "")
        message = first["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
        if first["type"] == "missing":
            message = "missing required key"
        elif first["type"] not in ("value_error", "assertion_error", "unknown_key"):
            message += f" (got {first['input']!r})"
        raise UserError(f"{key}: {message}" if key else message) from None
