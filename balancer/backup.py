"""Reading a backup file an operator uploads, before the store checks what it holds.

A file is refused with the reason, and nothing read from it is used, when it is bigger than a
backup of any appliance (``MAX_SIZE``), not UTF-8, not one complete JSON document, nested
deeper than a backup is (``MAX_DEPTH``), or names a key twice in one object: JSON parsers keep
the last of two, so what was checked and what was meant could differ. The document it gives is
then checked whole by ``Store.restore`` (format, version, every field of the configuration).
"""

from __future__ import annotations

import json
import re
from typing import Any

from balancer.validate import Invalid, Problem

# A backup of the guide's setup is about 2 KiB; of 1,000 services with ten servers each about
# 1.4 MiB, and of 5,000 (the largest the control plane is measured at) about 7 MiB.
MAX_SIZE = 16 << 20
# A backup's deepest value (a health check's setting in a service) is 5 levels down.
MAX_DEPTH = 16
# A string (escapes included) or a bracket: what nesting is counted from.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)


def read(data: bytes, field: str = "file") -> Any:
    """The JSON document in ``data``, or Invalid naming ``field`` (the file, or the API's
    request body) and the reason."""
    if len(data) > MAX_SIZE:
        raise _bad(
            field,
            f"is {len(data)} bytes; a backup is at most {MAX_SIZE} bytes ({MAX_SIZE >> 20} MiB)",
        )
    if not data.strip():
        raise _bad(field, "is empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise _bad(field, f"is not UTF-8 text (byte {error.start}): not a backup") from None
    depth = _depth(data)
    if depth > MAX_DEPTH:
        raise _bad(field, f"is nested {depth} levels deep; a backup is at most {MAX_DEPTH}")
    try:
        return json.loads(text, object_pairs_hook=_once, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        # Cut short inside a string, the parser points at the string's start, not the end.
        if error.pos >= len(text.rstrip()) or error.msg.startswith("Unterminated string"):
            reason = "ends before its JSON document does: the file is cut short"
        else:
            reason = f"is not JSON: {error.msg} at line {error.lineno} column {error.colno}"
        raise _bad(field, reason) from None
    except Invalid:
        raise
    except ValueError as error:  # NaN, or a number too long for Python's int conversion
        raise _bad(field, f"is not JSON this appliance reads: {error}") from None


def _bad(field: str, reason: str) -> Invalid:
    return Invalid([Problem(field, reason)])


def _depth(data: bytes) -> int:
    deepest = depth = 0
    for token in _TOKEN.finditer(data):
        bracket = token.group()
        if bracket in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif bracket in (b"]", b"}"):
            depth -= 1
    return deepest


def _once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            reason = "is given twice in one object: a backup names each setting once"
            raise Invalid([Problem(key, reason)])
        found[key] = value
    return found


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
