"""Typed configuration fields: one parser for `field=value`, one type check for values set from Python.

A configuration dataclass (`SepViTConfig`, `TrainConfig`) declares each field's type; this module reads those
annotations and nothing else, so every entry point (`python -m sepvit`, `ablate.py --model-kwargs`,
`analysis/complexity.py`, the Optuna search) coerces text the same way:

    bool            true / false / 1 / 0 / yes / no (any case)
    int, float      a number (an int field refuses 1.5)
    str             the text (surrounding quotes dropped)
    tuple[int, ...] 1,2,6,2 or (1, 2, 6, 2) or [1, 2, 6, 2]: per-stage lists
    X | None        none / null, or an X
    int | tuple     one int, or a tuple as above

A value that does not fit, or an unknown field, raises `FieldError` (a ValueError) whose one-line message
names the field and the expected type.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Sequence

_TRUE, _FALSE, _NONE = ("true", "1", "yes", "on"), ("false", "0", "no", "off"), ("none", "null")


class FieldError(ValueError):
    """A field name or value that the configuration cannot take; the message is one line."""


@functools.lru_cache(maxsize=None)
def field_types(cls: type) -> dict[str, Any]:
    """{field name: resolved type annotation} of a dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def check_known(cls: type, names: Sequence[str]) -> None:
    """FieldError naming every name that is not a field of `cls`."""
    known = field_types(cls)
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise FieldError(f"unknown {cls.__name__} field(s) {', '.join(unknown)}: known fields are "
                         f"{', '.join(sorted(known))}")


def describe(tp: Any) -> str:
    """A type annotation as a user reads it: 'bool (true/false)', 'tuple of ints (e.g. 1,2,6,2)'."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if _is_union(tp):
        text = " or ".join(describe(a) for a in args)
        return text + (" or none" if type(None) in typing.get_args(tp) else "")
    if typing.get_origin(tp) is tuple:
        return f"tuple of {typing.get_args(tp)[0].__name__}s (e.g. 1,2,6,2)"
    if tp is bool:
        return "bool (true/false/1/0)"
    return getattr(tp, "__name__", str(tp))


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _parse(tp: Any, text: str) -> Any:
    """`text` as a value of type `tp`; ValueError when it is not one."""
    text = text.strip()
    if _is_union(tp):
        options = typing.get_args(tp)
        if type(None) in options and text.lower() in _NONE:
            return None
        for option in (o for o in options if o is not type(None)):
            try:
                return _parse(option, text)
            except ValueError:
                continue
        raise ValueError(text)
    if typing.get_origin(tp) is tuple:
        inner = text[1:-1] if text[:1] + text[-1:] in ("()", "[]") else text
        items = [item for item in inner.replace(" ", ",").split(",") if item]
        if not items:
            raise ValueError(text)
        return tuple(_parse(typing.get_args(tp)[0], item) for item in items)
    if tp is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(text)
    if tp is int:
        return int(text.replace("_", ""))
    if tp is float:
        return float(text)
    if tp is str:
        return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text
    raise TypeError(f"fields of type {tp} cannot be set from text")


def coerce(cls: type, name: str, text: str) -> Any:
    """The value of field `name` of `cls` written as `text`."""
    check_known(cls, [name])
    tp = field_types(cls)[name]
    try:
        return _parse(tp, text)
    except ValueError:
        raise FieldError(f"{name}={text!r}: {name} expects {describe(tp)}") from None


def parse_assignments(cls: type, pairs: Sequence[str]) -> dict[str, Any]:
    """`["gsa=false", "depths=1,2,2,1"]` -> {"gsa": False, "depths": (1, 2, 2, 1)}, typed by `cls`'s fields."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            raise FieldError(f"expected field=value, got {pair!r}")
        out[name.strip()] = coerce(cls, name.strip(), text)
    return out


def _matches(tp: Any, value: Any) -> bool:
    if _is_union(tp):
        return any(_matches(option, value) for option in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        return isinstance(value, (tuple, list)) and all(_matches(inner, v) for v in value)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp)


def check_types(instance: Any) -> None:
    """FieldError for the first field whose value does not have its declared type (e.g. gsa='false')."""
    for name, tp in field_types(type(instance)).items():
        value = getattr(instance, name)
        if not _matches(tp, value):
            raise FieldError(f"{name}={value!r} ({type(value).__name__}): {name} expects {describe(tp)}")
