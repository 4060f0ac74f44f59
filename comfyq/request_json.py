"""What a request's JSON may hold: Unicode text, finite numbers, and nesting within a limit.

JSON as Python reads it lets through values that are accepted and then break whoever reads the
run back: a lone UTF-16 surrogate (``"\\ud800"``) is not Unicode, so no answer that holds it can
be encoded (every page listing the run fails); ``NaN`` and ``Infinity`` are not JSON, and an
integer of hundreds of digits overflows the float conversions of input checks, so no number may
be larger in magnitude than 2**64 - 1 (a 64-bit seed fits); nesting hundreds of levels
deep passes here and then exceeds a reader's recursion limit (the worker's among them). So a
request is refused at submit, with the field and the problem, when it holds any of these.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

from comfyq.errors import FieldProblem, InvalidRunRequest

#: Deepest nesting of objects and lists a request may have (the request object is level 1).
#: A ComfyUI graph needs about 6 levels and a UI-format workflow about 10.
MAX_JSON_DEPTH = 64
#: Largest magnitude of a number (a 64-bit seed fits; larger integers can overflow a float).
MAX_INTEGER = 2**64 - 1
#: Problems listed before the rest are only counted (a body can hold millions of bad strings).
MAX_LISTED_PROBLEMS = 20

Path = tuple[str | int, ...]


def load_request_json(text: str | bytes | bytearray) -> Any:
    """The JSON document ``text`` holds, with its values checked (see :func:`value_problems`).

    :raises InvalidRunRequest: the text is not JSON, or holds values a request may not hold.
    """
    try:
        # NaN and Infinity parse to floats, which the checks below refuse with their path.
        document = json.loads(text)
    except RecursionError:
        raise InvalidRunRequest([_too_deep(())]) from None
    except ValueError as error:  # JSONDecodeError, invalid UTF-8, an integer of 4300 digits
        raise InvalidRunRequest([FieldProblem("request", f"is not valid JSON ({_where(error)})",
                                              "json_invalid")]) from None
    refuse_unsafe_values(document)
    return document


def refuse_unsafe_values(document: Any) -> None:
    """:raises InvalidRunRequest: ``document`` holds values a request may not hold."""
    if _is_clean(document, 0):
        return
    problems = value_problems(document)
    if problems:
        raise InvalidRunRequest(problems)


def _is_clean(value: Any, depth: int) -> bool:
    """Whether ``value`` holds nothing :func:`value_problems` would list: the quick check every
    submit makes, which keeps no paths (only a request that fails it is walked for them)."""
    kind = type(value)
    if kind is str:
        return value.isascii() or _is_unicode(value)
    if kind is dict:
        return depth < MAX_JSON_DEPTH and all(
            (type(key) is not str or key.isascii() or _is_unicode(key))
            and _is_clean(item, depth + 1) for key, item in value.items())
    if kind is list:
        return depth < MAX_JSON_DEPTH and all(_is_clean(item, depth + 1) for item in value)
    if kind is int:
        return -MAX_INTEGER <= value <= MAX_INTEGER
    if value is None or kind is bool:
        return True
    return not isinstance(value, dict | list) and _scalar_problem(value) is None


def value_problems(document: Any) -> list[FieldProblem]:
    """Each text that is not Unicode, number that is not finite or beyond 2**64 - 1, and
    container nested deeper than :data:`MAX_JSON_DEPTH`, with its field path."""
    problems = list(_problems(document))
    if len(problems) > MAX_LISTED_PROBLEMS:
        more = len(problems) - MAX_LISTED_PROBLEMS
        problems = problems[:MAX_LISTED_PROBLEMS] + [FieldProblem(
            "request", f"and {more} more values like those above", problems[-1].kind)]
    return problems


def _problems(document: Any) -> Iterator[FieldProblem]:
    pending: list[tuple[Any, Path, int]] = [(document, (), 0)]
    while pending:
        value, path, depth = pending.pop()
        if isinstance(value, dict | list):
            if depth == MAX_JSON_DEPTH:
                yield _too_deep(path)
                continue
            items = list(value.items() if isinstance(value, dict) else enumerate(value))
            for key, _ in items:
                if isinstance(key, str) and not _is_unicode(key):
                    yield FieldProblem(_dotted((*path, key)), _not_unicode(key, "name"),
                                       "string_not_unicode")
            # Reversed onto the stack, so problems are listed in document order.
            pending.extend((item, (*path, key), depth + 1) for key, item in reversed(items))
        else:
            problem = _scalar_problem(value)
            if problem is not None:
                yield FieldProblem(_dotted(path), *problem)


def _scalar_problem(value: Any) -> tuple[str, str] | None:
    """(message, kind) of what is wrong with one value, or None."""
    if isinstance(value, str):
        return None if _is_unicode(value) else (_not_unicode(value, "text"), "string_not_unicode")
    if isinstance(value, float) and not math.isfinite(value):
        return (f"{value} is not a JSON number (NaN and Infinity are not JSON)",
                "number_not_finite")
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) > MAX_INTEGER:
        size = f"{len(str(abs(value)))} digits" if isinstance(value, int) else f"{value:g}"
        return (f"the number ({size}) is beyond the largest magnitude a number may have, "
                f"{MAX_INTEGER} (2**64 - 1)", "number_too_large")
    return None


def _is_unicode(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _not_unicode(text: str, what: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(text[error.start])
        return (f"the {what} is not valid Unicode: it holds a lone UTF-16 surrogate "
                f"(\\u{code:04x} at character {error.start})")
    return f"the {what} is not valid Unicode"


def _where(error: ValueError) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"Invalid JSON at line {error.lineno} column {error.colno}: {error.msg}"
    return f"Invalid JSON: {error}"


def _too_deep(path: Path) -> FieldProblem:
    return FieldProblem(_dotted(path), f"is nested deeper than the limit of {MAX_JSON_DEPTH} "
                                       "levels of objects and lists", "json_too_deep")


def _dotted(path: Path) -> str:
    # A name that is not Unicode is shown escaped, so the answer naming it can be encoded.
    parts = [str(part).encode("utf-8", "backslashreplace").decode("utf-8") for part in path]
    return ".".join(parts) or "request"
