"""The base of every config section: typed, validated on assignment, unknown keys refused, and a bad value
reported as medtl's one line (``train.lr: Input should be greater than 0 (1 problem(s); fix the value)``),
whether it came from a YAML file, an override or Python code."""

from __future__ import annotations

import types
import typing
from typing import Any, ClassVar, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from medtl.errors import ConfigError, did_you_mean


def section_model(annotation: Any) -> type[BaseModel] | None:
    """``annotation`` when it is a config section (a pydantic model), else None (a value, a free-form mapping)."""
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def field_path(loc: Sequence[Any], root: type[BaseModel]) -> tuple:
    """A pydantic error location without the union branch names it adds after a field that takes one of
    several types (``eval.threshold.float``, ``train.lr.constrained-float``): the key a user wrote."""
    out: list[Any] = []
    model: Any = root
    skip = False
    for x in loc:
        if skip:
            skip, model = False, None
            continue
        out.append(x)
        fields = m.model_fields if (m := section_model(model)) else {}
        model = fields[x].annotation if x in fields else None
        if typing.get_origin(model) in (typing.Union, types.UnionType):
            skip = len([a for a in typing.get_args(model) if a is not type(None)]) > 1
    return tuple(out)


def _unknown_key_hint(loc: Sequence[Any], root: type[BaseModel]) -> str:
    model: Any = root
    for k in loc[:-1]:
        field = m.model_fields.get(k) if (m := section_model(model)) else None
        if field is None:
            return ""
        model = field.annotation
    return (did_you_mean(str(loc[-1]), m.model_fields) or "") if (m := section_model(model)) else ""


def first_problem(exc: ValidationError, root: type[BaseModel]) -> tuple[tuple, str, int]:
    """``(key, what is wrong with it, how many keys are wrong)`` of a pydantic report on ``root``: its
    first bad key, with every message about that key (a value no branch of a union takes fails each
    branch) and a did-you-mean hint for an unknown key."""
    errors = exc.errors()
    first, loc = errors[0], field_path(errors[0]["loc"], root)
    msg = "; or ".join(dict.fromkeys(str(e["msg"]).removeprefix("Value error, ") for e in errors
                                     if field_path(e["loc"], root) == loc))
    hint = _unknown_key_hint(first["loc"], root) if first["type"] == "extra_forbidden" else ""
    return loc, f"{msg}{hint}", len({field_path(e["loc"], root) for e in errors})


def _leaves(annotation: Any) -> list[Any]:
    """The plain types (and ``Literal`` values) a field annotation admits, through Optional/Union/Annotated."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        args = typing.get_args(annotation)
        return [leaf for a in (args[:1] if origin is typing.Annotated else args) for leaf in _leaves(a)]
    if origin is typing.Literal:
        return list(typing.get_args(annotation))
    return [annotation]


def takes_a_number_not_a_flag(annotation: Any) -> bool:
    """Whether a field takes an int or a float and no boolean: YAML 1.1's ``yes``/``on``/``true`` is then a
    mistake, which pydantic's lax mode would read as 1 (``train.epochs=yes``: one epoch)."""
    leaves = _leaves(annotation)
    return any(leaf in (int, float) for leaf in leaves) and not any(leaf is bool or isinstance(leaf, bool)
                                                                    for leaf in leaves)


def one_line_message(where: str, what: str, n_problems: int, fix: str) -> str:
    """The one format of a config error: ``key: what (N problem(s); fix)``."""
    return f"{where + ': ' if where else ''}{what} ({n_problems} problem(s); {fix})"


class Section(BaseModel):
    """A config section; a typo in a key is an error, never silently ignored, and a bad value set from
    Python (``cfg.train.lr = -1``, ``TrainConfig(lr=-1)``, ``Config.model_validate(d)``) is a one-line
    :class:`~medtl.errors.ConfigError`, as it is from a YAML file, not pydantic's multi-line report."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    #: where this section sits in an experiment config (``train``), so that an error names the whole key
    config_key: ClassVar[str] = ""

    @field_validator("*", mode="before")
    @classmethod
    def _no_flag_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and takes_a_number_not_a_flag(field.annotation):
            raise ValueError(f"{str(value).lower()} is a yes/no value (YAML reads yes/no/on/off/true/false so): "
                             "give a number")
        return value

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise self._config_error(exc) from None

    # pydantic calls a model's own __init__ when it validates the model nested in another (a section in a
    # Config); marked as its base init, nested validation skips it and reports every bad key in one report
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise self._config_error(exc) from None

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Any:
        """pydantic's ``model_validate``, with a bad value reported as one line."""
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise cls._config_error(exc) from None

    @classmethod
    def _config_error(cls, exc: ValidationError) -> ConfigError:
        loc, what, n = first_problem(exc, cls)
        where = ".".join(map(str, (*filter(None, [cls.config_key]), *loc)))
        return ConfigError(one_line_message(where, what, n, "fix the value"))
