"""Comma-separated numbers from the command line, with one clear error for bad input."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

N = TypeVar("N", int, float)


def numbers(text: str, kind: Callable[[str], N], option: str, minimum: N) -> list[N]:
    """The values in `text` ("1,2,4"); ValueError naming `option` unless every one is a
    `kind` of at least `minimum`."""
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    # "nan" and "inf" parse as floats; neither is a count, a duration or a round trip
    if not values or any(not (math.isfinite(v) and v >= minimum) for v in values):
        noun = "integers" if kind is int else "numbers"
        if minimum == 0:
            wanted = f"non-negative {noun}"
        elif minimum == 1 and kind is int:
            wanted = "positive integers"
        else:
            wanted = f"{noun} of at least {minimum:g}"
        raise ValueError(f"{option} takes comma-separated {wanted}, got {text!r}")
    return values
