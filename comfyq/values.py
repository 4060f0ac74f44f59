"""Converting literal input values to INT, FLOAT and BOOLEAN, with errors naming the input.

ComfyUI converts literals while validating a prompt (``int(value)``, ``float(value)``); comfyq's
executor passes literals through as the request gave them, so nodes convert them here.
"""

from __future__ import annotations

import math
from typing import Any

_TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
_FALSE_WORDS = frozenset({"false", "no", "off", "0"})


def as_int(value: Any, input_name: str) -> int:
    """``value`` as an int: ints, integral floats and integer strings such as ``"-3"``."""
    if isinstance(value, bool):
        raise ValueError(f"{input_name}: expected an integer, got the boolean {value}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{input_name}: expected an integer, got {value!r}")


def as_float(value: Any, input_name: str) -> float:
    """``value`` as a finite float: numbers and numeric strings such as ``"2.5"``."""
    if isinstance(value, bool):
        raise ValueError(f"{input_name}: expected a number, got the boolean {value}")
    if isinstance(value, (int, float, str)):
        try:
            number = float(value.strip() if isinstance(value, str) else value)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
    raise ValueError(f"{input_name}: expected a finite number, got {value!r}")


def as_bool(value: Any, input_name: str) -> bool:
    """``value`` as a bool: booleans, 0/1, and the words true/false, yes/no, on/off."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise ValueError(f"{input_name}: expected a boolean (true or false), got {value!r}")


def is_number(value: Any) -> bool:
    """Whether ``value`` is an int or float and not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
