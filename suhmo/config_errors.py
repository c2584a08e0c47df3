"""Configuration mistakes in one line: :class:`ConfigError`, the closest-name suggestion, and the
one translator of pydantic's validation errors into such a line (:func:`error_line`), used for the
config's fields (``suhmo.config``) and for the search-space files (``launch.space``).

Imports nothing of ours: the config, its field checks and the space files all read it.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass
from typing import Any, Optional

import pydantic


class ConfigError(ValueError):
    """A configuration mistake; the message says which key and why."""


def suggest(name: str, candidates: list[str]) -> str:
    """``"; did you mean 'optim.lr_g'?"`` for the closest of ``candidates``, else ``""``."""
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    if not close:
        # also try on the last dotted component
        tail = {c.split(".")[-1]: c for c in candidates}
        hit = difflib.get_close_matches(name.split(".")[-1], list(tail), n=1, cutoff=0.6)
        close = [tail[hit[0]]] if hit else []
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True)
class Field:
    """A config field being checked (``key = value``): what :func:`error_line` names in its line.
    ``hint``: its declared type (bounds on its ``Annotated`` metadata), ``type_name``: the plain
    type in words, ``choices``: its allowed values (a ``OneOf`` field), else None."""

    key: str
    value: Any
    type_name: str
    hint: Any = None
    choices: Optional[tuple] = None


_BOUNDS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def error_line(err: dict, where: str = "", *, field: Optional[Field] = None, schema: Any = None,
               what: str = "key", sep: str = ".") -> str:
    """The one-line message of pydantic's first error ``err`` (``ValidationError.errors()[0]``).

    ``field``: the error of one config field (``suhmo.config``): ``key=value: choose one of ...``,
    ``must be <range>``, ``must be a finite number`` or ``key: expected <type>, got value``.
    Otherwise the error of ``schema`` (a pydantic model, or an annotated union of models tagged by
    ``type``) on a mapping at ``where``, whose keys are named ``where + sep + key``."""
    kind = err["type"]
    if field is not None:
        key, value = field.key, field.value
        if field.choices is not None and kind == "literal_error":
            return f"{key}={value!r}: choose one of {', '.join(field.choices)}{suggest(str(value), list(field.choices))}"
        if kind in _BOUNDS:
            return f"{key}={value}: must be {bounds_text(field.hint)}"
        if kind == "finite_number":
            return f"{key}={value}: must be a finite number"
        return f"{key}: expected {field.type_name}, got {value!r}"
    return _schema_line(err, schema, where, what, sep)


def validate(schema: Any, data: Any, where: str, what: str = "key", sep: str = ".") -> Any:
    """``data`` checked against ``schema`` (a model or an annotated union), or a one-line ConfigError;
    a key is named ``where + sep + key``."""
    try:
        return pydantic.TypeAdapter(schema).validate_python(data)
    except pydantic.ValidationError as e:
        raise ConfigError(error_line(e.errors(include_url=False)[0], where, schema=schema, what=what,
                                     sep=sep)) from None


def _schema_line(err: dict, schema: Any, where: str, what: str, sep: str) -> str:
    kind, loc, ctx, value = err["type"], err["loc"], err.get("ctx") or {}, err.get("input")
    members = {m.model_fields["type"].annotation.__args__[0]: m
               for m in typing.get_args(typing.get_args(schema)[0])} if typing.get_origin(schema) else {}
    model, tag = schema, None
    if members and kind not in ("union_tag_invalid", "union_tag_not_found"):
        tag, loc = loc[0], loc[1:]
        model = members[tag]
    name = str(loc[0]) if loc else ""
    at = f"{where}{sep}{name}" if name else where
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        got = ctx.get("tag")
        return f"{where}: unknown {what} {got!r}{suggest(str(got), list(members))} (use {', '.join(members)})"
    if kind == "extra_forbidden":
        known = list(model.model_fields)
        if tag is not None:
            return f"{where}: {name!r} does not apply to type {tag}{suggest(name, known)}"
        return f"{where}: unknown {what} {name!r}{suggest(name, known)} ({what}s: {', '.join(known)})"
    if kind == "missing":
        return f"{where}: {tag} needs '{name}'"
    if kind == "value_error":
        return f"{at}: {ctx.get('error')}" + (f", got {value!r}" if name else "")
    if kind in ("too_short", "list_type"):
        return f"{at}: expected a non-empty list, got {value!r}"
    if kind in ("dict_type", "model_type"):
        return f"{at}: expected a mapping, got {value!r}"
    info = model.model_fields.get(name) if isinstance(model, type) else None
    bound = next(((op, ctx[k]) for k, op in (("ge", ">="), ("gt", ">")) if k in ctx), None) or next(
        ((op, getattr(c, k)) for c in (info.metadata if info else ()) for k, op in (("ge", ">="), ("gt", ">"))
         if hasattr(c, k)), None)
    number = "an integer" if info is not None and int in (info.annotation, *typing.get_args(info.annotation)) \
        else "a number"
    why = f" ({info.description})" if info is not None and info.description else ""
    if bound:
        return f"{at}: expected {number} {bound[0]} {bound[1]}{why}, got {value!r}"
    if kind == "finite_number":
        return f"{at}: expected a finite number, got {value!r}"
    return f"{at}: expected {'text' if kind == 'string_type' else number}, got {value!r}"


def base_hint(hint: Any) -> Any:
    """``Optional[X]`` -> X."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint


def bounds_text(hint: Any) -> str:
    """The declared range of a number field in words: ``>= 1``, ``in [0, 1)``, ``a positive number``."""
    info = next(m for m in base_hint(hint).__metadata__ if isinstance(m, pydantic.fields.FieldInfo))
    b = {k: getattr(c, k) for c in info.metadata for k in ("ge", "gt", "le", "lt") if hasattr(c, k)}
    lo = ("[", b["ge"]) if "ge" in b else ("(", b["gt"]) if "gt" in b else None
    hi = (b["le"], "]") if "le" in b else (b["lt"], ")") if "lt" in b else None
    if lo and hi:
        text = f"in {lo[0]}{lo[1]}, {hi[0]}{hi[1]}"
    elif lo:
        text = "a positive number" if lo == ("(", 0) else f"{'>=' if lo[0] == '[' else '>'} {lo[1]}"
    else:
        text = f"{'<=' if hi[1] == ']' else '<'} {hi[0]}"
    return f"{text} {info.description}" if info.description else text
