"""Rules shared by every config section, kept free of privfl imports so that the sections
defined beside their features (``defenses/*/config.py``, ``attacks/*/config.py``) can use them
without an import cycle through :mod:`privfl.config`."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, PositiveInt

# Every config section: unknown keys are errors, values are immutable, and no float field
# takes inf or nan (``lr = inf`` would train on NaN; a NaN clip disables clipping).
SECTION_CONFIG = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def only_with(section: BaseModel, field: str, condition: bool, requirement: str) -> None:
    """Reject ``field`` of ``section`` when the user gave it a non-default value although
    ``condition`` is false; a default written out by a resolved config.toml passes.

    Raises:
        ValueError: ``"<field> applies only when <requirement>"`` (pydantic turns it into the
            section's validation error, which privfl reports as a ConfigError).
    """
    default = type(section).model_fields[field].get_default(call_default_factory=True)
    if field in section.model_fields_set and getattr(section, field) != default and not condition:
        raise ValueError(f"{field} applies only when {requirement}")


def _some_rounds(v: list[int] | None) -> list[int] | None:
    if v is not None and not v:
        raise ValueError("rounds is empty: list at least one round, or leave it out")
    return v


#: An optional list of rounds (an attack's or a measurement's): unset, or at least one.
OptionalRounds = Annotated[list[PositiveInt] | None, AfterValidator(_some_rounds)]


__all__ = ["SECTION_CONFIG", "OptionalRounds", "only_with"]
