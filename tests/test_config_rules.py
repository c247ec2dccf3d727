"""The shared "applies only when" rule of every config section."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError, model_validator

from privfl.config_rules import only_with


class _Section(BaseModel):
    mode: str = "a"
    knob: int = 3
    items: list[int] = [1]

    @model_validator(mode="after")
    def _check(self):
        only_with(self, "knob", self.mode == "b", "mode = 'b'")
        only_with(self, "items", self.mode == "b", "mode = 'b'")
        return self


def test_non_default_value_where_it_does_not_apply_is_rejected():
    with pytest.raises(ValidationError, match=r"knob applies only when mode = 'b'"):
        _Section(knob=4)
    with pytest.raises(ValidationError, match=r"items applies only when mode = 'b'"):
        _Section(items=[1, 2])


def test_defaults_written_out_and_values_where_they_apply_pass():
    assert _Section(knob=3, items=[1]).knob == 3  # a resolved config.toml writes defaults
    assert _Section(mode="b", knob=4, items=[2]).knob == 4
