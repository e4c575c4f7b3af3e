"""Validation shared by both configuration files: pydantic checks the declared types and rules,
this module turns its first error into Loopline's one line, ``file: key: problem``.

The typed classes themselves (``pipelines.config``, ``pipelines.project``) are pydantic dataclasses:
a key is one annotated field, its rule one validator, so adding a key touches one place.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, ConfigDict, TypeAdapter, ValidationError, WrapValidator
from pydantic_core import PydanticCustomError

from pipelines.errors import LooplineError

T = TypeVar("T")

#: Unknown keys are errors; a key named differently in the file (``health``) also takes its field name.
STRICT = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)


class ConfigError(LooplineError, ValueError):
    """A configuration file is wrong; the message names the file, the key and the problem."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}")
        self.source, self.key, self.problem = source, key, problem


def problem(message: str, at: str = "") -> PydanticCustomError:
    """A rule's failure, reported as ``message``; ``at`` names a key below the one validated."""
    return PydanticCustomError("config", message, {"at": at})


def explained(message: str) -> WrapValidator:
    """Whatever fails inside this key is reported as ``message``: one plain sentence, not pydantic's."""

    def validate(value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise problem(message) from None

    return WrapValidator(validate)


def check(rule: Callable[[Any], bool], message: str) -> AfterValidator:
    """A value that passes its type but not ``rule`` is reported as ``message``."""

    def validate(value: Any) -> Any:
        if not rule(value):
            raise problem(message)
        return value

    return AfterValidator(validate)


def one_of(choices: Iterable[str], what: str = "must be") -> AfterValidator:
    names = tuple(choices)
    return check(lambda v: v in names, f"{what} one of {', '.join(names)}")


NonEmpty = Annotated[str, check(lambda v: bool(v.strip()), "expected a non-empty string")]
EnvName = Annotated[
    NonEmpty,
    check(
        re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$").match, "expected the NAME of an environment variable"
    ),
]
Url = Annotated[NonEmpty, check(lambda v: v.startswith(("https://", "http://")), "expected an http(s) URL")]

_MAPPINGS = {"dict_type", "dataclass_type", "model_type", "dataclass_exact_type"}
_PLAIN = {
    "missing": "is required",
    "missing_argument": "is required",
    "extra_forbidden": "unknown key",
    "unexpected_keyword_argument": "unknown key",
    "string_type": "expected a string",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "bool_type": "expected true or false",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
}
_SECRET_WORDS = ("key", "secret", "token", "password", "sas")


def _problem(error: Any) -> str:
    kind = error["type"]
    if kind == "config":
        return str(error["msg"])
    if kind in _MAPPINGS:
        return f"expected a mapping, got {type(error['input']).__name__}"
    text = _PLAIN.get(kind) or error["msg"][0].lower() + error["msg"][1:]
    name = str(error["loc"][-1]) if error["loc"] else ""
    if text == "unknown key" and any(word in name.lower() for word in _SECRET_WORDS):
        text += " (credentials go in environment variables: name them with *_env)"
    return text


def _key(loc: tuple[Any, ...], at: str) -> str:
    text = ""
    for part in (*(p for p in loc if p != "[key]"), *(at.split(".") if at else ())):
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text and not part.startswith("[") else str(part)
    return text or "(top level)"


def _without_nulls(raw: Any) -> Any:
    """An empty YAML key (``gate:``) or ``null`` reads as absent: the default applies."""
    if isinstance(raw, dict):
        return {k: _without_nulls(v) for k, v in raw.items() if v is not None}
    if isinstance(raw, list):
        return [_without_nulls(v) for v in raw]
    return raw


_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def load(kind: type[T], raw: Any, source: str) -> T:
    """``raw`` (loaded YAML; ``None``: an absent file) as ``kind``, or :class:`ConfigError`."""
    try:
        adapter = _ADAPTERS.get(kind) or _ADAPTERS.setdefault(kind, TypeAdapter(kind))
        value: T = adapter.validate_python({} if raw is None else _without_nulls(raw))
    except ValidationError as exc:
        error = exc.errors()[0]
        at = (error.get("ctx") or {}).get("at", "")
        raise ConfigError(source, _key(tuple(error["loc"]), at), _problem(error)) from None
    return value
