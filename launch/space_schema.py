"""The declared shape of a search-space file (pydantic models).

What depends on the config (field types, keys, conditional branches) is checked by
:mod:`launch.space` when it resolves the file; ``suhmo.config_errors`` turns pydantic's first
error into one line that names the file and key.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr, model_validator


def _no_bool(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError("expected a number")
    return v


Number = Annotated[float, BeforeValidator(_no_bool), Field(allow_inf_nan=False)]
Count = Annotated[StrictInt, Field(ge=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Range(_Strict):
    low: Number
    high: Number
    step: Optional[Annotated[Number, Field(gt=0)]] = None

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError(f"low={self.low:g} must be < high={self.high:g}")
        return self


class Uniform(_Range):
    type: Literal["uniform"]


class LogUniform(_Range):
    type: Literal["loguniform"]

    @model_validator(mode="after")
    def _positive(self):
        if self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got {self.low:g}")
        return self


class IntRange(_Range):
    type: Literal["int"]
    log: bool = False

    @model_validator(mode="after")
    def _whole(self):
        if not (self.low.is_integer() and self.high.is_integer()):
            raise ValueError(f"int bounds must be whole numbers, got {self.low:g}..{self.high:g}")
        if self.log and self.low <= 0:
            raise ValueError(f"int with log: true needs low >= 1, got {self.low:g}")
        if self.step is not None and not self.step.is_integer():
            raise ValueError("step: must be a positive whole number")
        if self.step is not None and self.log:
            raise ValueError("step and log: true cannot be combined")
        return self


class Choice(_Strict):
    type: Literal["choice"]
    values: Annotated[list, Field(min_length=1)]
    when: Optional[dict[Any, Any]] = None


Distribution = Annotated[Union[LogUniform, Uniform, IntRange, Choice], Field(discriminator="type")]
DISTRIBUTIONS = tuple(m.model_fields["type"].annotation.__args__[0] for m in typing.get_args(
    typing.get_args(Distribution)[0]))


class Asha(_Strict):
    type: Literal["asha"]
    grace_period: Annotated[Count, Field(description="evaluations")] = 1
    reduction_factor: Annotated[Number, Field(gt=1)] = 2


class Fifo(_Strict):
    type: Literal["fifo"]


Scheduler = Annotated[Union[Asha, Fifo], Field(discriminator="type")]
SCHEDULERS = ("asha", "fifo")


class Budget(_Strict):
    num_samples: Count = 8
    max_concurrent: Count = 2
    time_budget: Any = None  # parse_duration


class SpaceFile(_Strict):
    description: Optional[StrictStr] = ""
    base: Optional[dict[Any, Any]] = None
    params: Optional[dict[Any, Any]] = None
    objective: Any = None
    objectives: Any = None
    scheduler: Any = None
    budget: Any = None
    sampler: Any = None
    seed: Annotated[StrictInt, Field(ge=0)] = 0


TOP_LEVEL = tuple(SpaceFile.model_fields)
