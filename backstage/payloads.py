"""Typed payloads: check a payload against its handler's annotation, rebuild it in the child.

A handler whose payload parameter is annotated with a dataclass, a
``TypedDict`` or a pydantic model gets a :class:`PayloadCodec`: producers
check the payload with it before anything is written (``InvalidJobError``
naming the field), and the worker's child rebuilds the JSON into that type
before calling the handler. Handlers with any other annotation (or none)
get no codec and pay nothing. pydantic is never imported here: a model is
recognised by its ``model_validate``/``model_dump`` methods.

Runs in producers (``Task.enqueue``, ``app.enqueue``) and in prefork children.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime as _dt
import enum
import inspect
import types
import typing
import uuid
from typing import Any, Callable, Union

from .errors import InvalidJobError

__all__ = ["PayloadCodec", "codec_for"]

def _is_pydantic(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "model_validate") and hasattr(tp, "model_dump")


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def _structured(tp: Any) -> bool:
    """A type we validate and rebuild: dataclass, TypedDict, pydantic model, or a
    list / dict / Optional holding one."""
    if typing.get_origin(tp) in (Union, types.UnionType, list, dict, tuple, collections.abc.Sequence,
                                 collections.abc.Mapping):
        return any(_structured(a) for a in typing.get_args(tp) if a is not type(None))  # Optional[X], list[X]
    return (isinstance(tp, type) and dataclasses.is_dataclass(tp)) or _is_typeddict(tp) or _is_pydantic(tp)


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'…' if len(text) > 40 else ''}"


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or repr(tp)


class _Bad(Exception):
    """A payload that does not fit its type: where, and why."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _join(path: str, key: Any) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))


def _hints(tp: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(tp)
    except Exception:  # noqa: BLE001 - unresolvable forward refs: check the keys only
        return {k: Any for k in getattr(tp, "__annotations__", {})}


def _check(tp: Any, value: Any, path: str) -> Any:
    """Check ``value`` against ``tp``; return its JSON form (what goes on the wire)."""
    if tp is Any or tp is object or isinstance(tp, typing.TypeVar):
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _check(arg, value, path)
            except _Bad:
                continue
        raise _Bad(path, f"expected {' | '.join(_name(a) for a in typing.get_args(tp))}, got {_describe(value)}")
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise _Bad(path, f"expected one of {typing.get_args(tp)!r}, got {_describe(value)}")
    if tp is type(None) or tp is None:
        if value is None:
            return None
        raise _Bad(path, f"expected None, got {_describe(value)}")
    if origin in (list, tuple, set, frozenset, typing.Sequence, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            raise _Bad(path, f"expected a list, got {_describe(value)}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        return [_check(item, v, _join(path, i)) for i, v in enumerate(value)]
    if origin in (dict, typing.Mapping, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise _Bad(path, f"expected an object, got {_describe(value)}")
        args = typing.get_args(tp)
        item = args[1] if len(args) == 2 else Any
        return {k: _check(item, v, _join(path, k)) for k, v in value.items()}
    if not isinstance(tp, type):
        return value  # Annotated, NewType, generics we do not model: not checked
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            value = {f.name: getattr(value, f.name) for f in dataclasses.fields(tp)}
        return _check_fields(tp, value, path, {f.name for f in dataclasses.fields(tp)
                                                 if f.default is dataclasses.MISSING
                                                 and f.default_factory is dataclasses.MISSING})
    if _is_typeddict(tp):
        return _check_fields(tp, value, path, set(getattr(tp, "__required_keys__", ())))
    if _is_pydantic(tp):
        return _check_pydantic(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    elif issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value.value
        try:
            return tp(value).value
        except ValueError:
            pass
    elif tp in (_dt.datetime, _dt.date, uuid.UUID):
        if isinstance(value, tp):
            return value.isoformat() if not isinstance(value, uuid.UUID) else str(value)
        if isinstance(value, str):
            try:
                _parse(tp, value)
                return value
            except ValueError:
                pass
    elif isinstance(value, tp):
        return value
    else:
        return value  # a class we do not know how to check: JSON encoding decides
    raise _Bad(path, f"expected {_name(tp)}, got {_describe(value)}")


def _check_fields(tp: Any, value: Any, path: str, required: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(path, f"expected {_name(tp)} or an object with its fields, got {_describe(value)}")
    hints = _hints(tp)
    for key in value:
        if key not in hints:
            raise _Bad(_join(path, key), f"unknown field of {_name(tp)}")
    for key in sorted(required):
        if key not in value:
            raise _Bad(_join(path, key), f"missing (required by {_name(tp)})")
    return {k: _check(hints[k], v, _join(path, k)) for k, v in value.items()}


def _check_pydantic(tp: Any, value: Any, path: str) -> Any:
    if not isinstance(value, tp):
        try:
            value = tp.model_validate(value)
        except Exception as exc:  # noqa: BLE001 - pydantic.ValidationError, without importing pydantic
            errors = getattr(exc, "errors", None)
            if not callable(errors):
                raise
            first = errors()[0]
            where = path
            for part in first.get("loc", ()):
                where = _join(where, part)
            raise _Bad(where, str(first.get("msg", exc))) from None
    return value.model_dump(mode="json")


def _parse(tp: Any, text: str) -> Any:
    if tp is uuid.UUID:
        return uuid.UUID(text)
    return tp.fromisoformat(text)


def _build(tp: Any, value: Any) -> Any:
    """Rebuild a checked JSON value as ``tp`` (the child side)."""
    if value is None or tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                _check(arg, value, "")
            except _Bad:
                continue
            return _build(arg, value)
        return value
    if origin in (list, tuple, set, frozenset) and isinstance(value, list):
        args = typing.get_args(tp)
        return [_build(args[0], v) for v in value] if args else value
    if origin is dict and isinstance(value, dict):
        args = typing.get_args(tp)
        return {k: _build(args[1], v) for k, v in value.items()} if len(args) == 2 else value
    if not isinstance(tp, type):
        return value
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        hints = _hints(tp)
        return tp(**{k: _build(hints.get(k, Any), v) for k, v in value.items()})
    if _is_typeddict(tp) and isinstance(value, dict):
        hints = _hints(tp)
        return {k: _build(hints.get(k, Any), v) for k, v in value.items()}
    if _is_pydantic(tp):
        return getattr(tp, "model_validate")(value)
    if issubclass(tp, enum.Enum):
        return tp(value)
    if tp in (_dt.datetime, _dt.date, uuid.UUID) and isinstance(value, str):
        return _parse(tp, value)
    return value


class PayloadCodec:
    """Checks payloads of one task against its annotated type and rebuilds them."""

    __slots__ = ("task", "type")

    def __init__(self, task: str, tp: Any) -> None:
        self.task = task
        self.type = tp

    def check(self, payload: Any) -> Any:
        """The payload in its JSON form; raises InvalidJobError naming the bad field."""
        try:
            return _check(self.type, payload, "")
        except _Bad as exc:
            where = f"payload field {exc.path!r}" if exc.path else "payload"
            raise InvalidJobError(f"task {self.task!r}: {where}: {exc.message}") from None

    def build(self, value: Any) -> Any:
        """The handler's argument, rebuilt from decoded JSON."""
        return _build(self.type, value)


def codec_for(task: str, func: Callable[..., Any]) -> PayloadCodec | None:
    """A codec when the handler's first parameter is annotated with a
    dataclass, TypedDict or pydantic model; None otherwise."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return None
    if not params or params[0].annotation is inspect.Parameter.empty:
        return None
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # noqa: BLE001 - an annotation that cannot be resolved: no checks
        return None
    tp = hints.get(params[0].name)
    if tp is None or not _structured(tp):
        return None
    return PayloadCodec(task, tp)
