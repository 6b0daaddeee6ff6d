"""Configuration in, problems out: each names the field and the reason. Pure.

Field paths name objects by label where one is known, so an operator reads
``virtual_services[CyberArk-PSM].real_servers[PSM1].port`` rather than a list index.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from balancer.model import Config, VirtualService
from balancer.model.types import LABEL_PATTERN, LABEL_RULE, each_port

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Problem:
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason


class Invalid(ValueError):
    """Raised with every problem found; nothing is saved when it is raised."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


_FIELD_PREFIX = re.compile(r"^(?:Value error, )?([a-z_]+): (.*)$", re.S)


def _labelled(loc: Sequence[int | str], data: Any) -> str:
    """Turn pydantic's location into a dotted path, lists indexed by label where there is one."""
    parts: list[str] = []
    node = data
    for step in loc:
        if isinstance(step, int):
            label = None
            if isinstance(node, list | tuple) and 0 <= step < len(node):
                item = node[step]
                node = item
                if isinstance(item, dict) and isinstance(item.get("label"), str):
                    label = item["label"]
            else:
                node = None
            parts[-1:] = [f"{parts[-1] if parts else ''}[{label if label else step}]"]
        else:
            node = node.get(step) if isinstance(node, dict) else None
            parts.append(step)
    return ".".join(parts)


def problems_of(error: ValidationError, data: Any, prefix: str = "") -> list[Problem]:
    found: list[Problem] = []
    for item in error.errors(include_url=False):
        loc = [step for step in item["loc"] if not str(step).startswith("function-")]
        message = str(item["msg"])
        matched = _FIELD_PREFIX.match(message)
        if matched and item["type"] == "value_error":
            # A model-level rule names its own field as "field: reason".
            loc.append(matched.group(1))
            message = matched.group(2)
        else:
            message = reason(item)
        path = _labelled(loc, data)
        found.append(Problem(".".join(p for p in (prefix, path) if p), message))
    return found


def reason(item: Mapping[str, Any]) -> str:
    """One of pydantic's errors in the operator's words: "must be at most 65535, not 99999"
    rather than "Input should be less than or equal to 65535". The API, the CLI and the WebUI
    all show these; a kind not known here keeps pydantic's own message."""
    kind = str(item["type"])
    given = item.get("input")
    ctx = item.get("ctx") or {}
    if kind == "missing" or (given == "" and kind in _EMPTY_MEANS_MISSING):
        return "is required"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == LABEL_PATTERN:
        return LABEL_RULE
    if kind in _BOUNDS:
        word, key = _BOUNDS[kind]
        return f"must be {word} {_number(ctx[key])}, not {_number(given)}"
    if kind in ("enum", "literal_error"):
        return f"must be {ctx['expected']}, not {given!r}"
    if kind in _KINDS:
        return _KINDS[kind].format(given=given, **ctx)
    return str(item["msg"]).removeprefix("Value error, ")


# A form's field left empty arrives as "", which pydantic calls a bad number or a bad pattern.
_EMPTY_MEANS_MISSING = {
    "int_parsing",
    "float_parsing",
    "bool_parsing",
    "string_pattern_mismatch",
    "string_too_short",
}
_BOUNDS = {
    "greater_than_equal": ("at least", "ge"),
    "greater_than": ("more than", "gt"),
    "less_than_equal": ("at most", "le"),
    "less_than": ("less than", "lt"),
}
_KINDS = {
    "extra_forbidden": "is not a known setting",
    "int_parsing": "{given!r} is not a whole number",
    "int_type": "{given!r} is not a whole number",
    "int_from_float": "{given!r} is not a whole number",
    "float_parsing": "{given!r} is not a number",
    "float_type": "{given!r} is not a number",
    "finite_number": "{given!r} is not a number",
    "bool_parsing": "must be true or false, not {given!r}",
    "bool_type": "must be true or false, not {given!r}",
    "string_type": "must be text, not {given!r}",
    "string_pattern_mismatch": "{given!r} is not in the form {pattern}",
    "string_too_short": "must be at least {min_length} characters long",
    "string_too_long": "must be at most {max_length} characters long",
    "model_type": "must be an object of settings ({{...}}), not {given!r}",
    "model_attributes_type": "must be an object of settings ({{...}}), not {given!r}",
    "dict_type": "must be an object of settings ({{...}}), not {given!r}",
    "tuple_type": "must be a list ([...]), not {given!r}",
    "list_type": "must be a list ([...]), not {given!r}",
}


def _number(value: Any) -> str:
    """604800 rather than 604800.0, and 99999 typed into a form as 99999; anything that is
    not a number, quoted."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    try:
        float(value)
    except (TypeError, ValueError):
        return repr(value)
    return str(value).strip()


def parse_as(model: type[M], data: Any, prefix: str = "") -> M:
    """Build one model object from untrusted data, raising Invalid with field paths."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise Invalid(problems_of(error, data, prefix)) from None


def parse(data: Any) -> Config:
    """Untrusted data (an API body, a backup document) to a checked Config, or Invalid."""
    config = parse_as(Config, data)
    found = check(config)
    if found:
        raise Invalid(found)
    return config


def checked(config: Config, *, known: Config | None = None) -> Config:
    found = check(config, known=known)
    if found:
        raise Invalid(found)
    return config


def check(config: Config, *, known: Config | None = None) -> list[Problem]:
    """Problems that span objects: duplicates and clashes the model alone cannot see.

    ``known`` is a configuration already checked: its virtual services (the same objects, as an
    edit keeps them) are not checked again on their own. The checks between services always
    run; each is a dict or set lookup, so a thousand services cost a thousand steps."""
    unchanged = {id(vs) for vs in known.virtual_services} if known is not None else set()
    found: list[Problem] = []
    found += _duplicates((vs.label for vs in config.virtual_services), "virtual_services", "label")
    bound = _Bound()
    for vs in config.virtual_services:
        where = f"virtual_services[{vs.label}]"
        found += bound.clashes(vs, where)
        if id(vs) not in unchanged:
            labels = (rs.label for rs in vs.real_servers)
            found += _duplicates(labels, f"{where}.real_servers", "label")
            found += _duplicate_targets(vs, where)
    return found


def _duplicates(labels: Iterable[str], where: str, field: str) -> list[Problem]:
    seen: set[str] = set()
    found = []
    for label in labels:
        if label in seen:
            found.append(Problem(f"{where}[{label}].{field}", f"{label!r} is used twice"))
        seen.add(label)
    return found


class _Bound:
    """The addresses and ports taken so far, each by the first service that took it."""

    def __init__(self) -> None:
        # (IP version, address as a number, port): plain ints hash faster than addresses.
        self.at: dict[tuple[int, int, int], str] = {}
        # (IP version, port): the first service on that port at any address of the family,
        # which is what a wildcard service clashes with.
        self.anywhere: dict[tuple[int, int], str] = {}

    def clashes(self, vs: VirtualService, where: str) -> list[Problem]:
        """Two services may not listen on the same IP and port, nor one on the wildcard address
        (0.0.0.0 or ::) and another on any address of that family with the same port."""
        version, address = vs.ip.version, int(vs.ip)
        ports = each_port(vs.ports)
        for port in ports:
            clash = self.at.get((version, address, port)) or self.at.get((version, 0, port))
            if clash is None and address == 0:
                clash = self.anywhere.get((version, port))
            if clash is not None and clash != vs.label:
                return [Problem(f"{where}.ports", f"{vs.ip}:{port} is already used by {clash!r}")]
        for port in ports:
            self.at.setdefault((version, address, port), vs.label)
            self.anywhere.setdefault((version, port), vs.label)
        return []


def _duplicate_targets(vs: VirtualService, where: str) -> list[Problem]:
    seen: dict[tuple[int, int, int | None], str] = {}
    found = []
    for rs in vs.real_servers:
        key = (rs.ip.version, int(rs.ip), rs.port)
        if key in seen:
            target = f"{rs.ip}:{rs.port}" if rs.port else str(rs.ip)
            found.append(
                Problem(
                    f"{where}.real_servers[{rs.label}].ip",
                    f"{target} is already real server {seen[key]!r} of this service",
                )
            )
        seen.setdefault(key, rs.label)
    return found
