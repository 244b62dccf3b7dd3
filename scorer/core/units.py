"""Human sizes (`512m`, `2g`, bytes) to integers, strictly."""

from __future__ import annotations

import re

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(value: str | int) -> int:
    """`512m` -> 536870912. Raises ValueError with the accepted forms on anything else."""
    if isinstance(value, bool):
        raise TypeError("a size must be a number of bytes or like 512m, 2g")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("a size must be positive")
        return value
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"invalid size {value!r}: use bytes or a number with k, m, g or t")
    number, unit = match.groups()
    size = int(float(number) * _UNITS[unit.lower()])
    if size <= 0:
        raise ValueError("a size must be positive")
    return size
