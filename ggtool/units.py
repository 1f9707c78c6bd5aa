"""Sizes for people: one formatter (and one parser) so every message spells bytes the same way."""

from __future__ import annotations

import re

from .errors import InputError

_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "M": 1000**2, "MB": 1000**2, "G": 1000**3, "GB": 1000**3,
          "T": 1000**4, "TB": 1000**4, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4}


def human_bytes(n: float, binary: bool = False) -> str:
    """1234567 -> '1.2 MB' (decimal units, as disk sizes and the Hub show them); binary=True:
    '1.2 MiB' (powers of 1024, as memory is counted)."""
    step, units = (1024, ("B", "KiB", "MiB", "GiB", "TiB")) if binary else (1000, ("B", "KB", "MB", "GB", "TB"))
    for unit in units:
        if abs(n) < step or unit == units[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= step
    return f"{n:.1f} {units[-1]}"


def parse_size(text: str) -> int:
    """'4GB', '4.5 GiB', '800M', '123456' -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).upper() if m else None
    if not m or unit not in _UNITS:
        raise InputError(f"cannot read {text!r} as a size",
                         hint="write it like 4GB, 4.5GiB, 800MB or a number of bytes")
    return int(float(m.group(1)) * _UNITS[unit])
