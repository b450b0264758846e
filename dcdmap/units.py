"""Byte quantities: parse ``"2M"``, ``"256MiB"``, ``"4k"``, ``"0x1000"`` and print them back.

Binary multiples only (K = 1024, as CXL, Linux and QEMU size memory)::

    >>> parse_size("256MiB")
    268435456
    >>> parse_size("2M") == 2 * MiB
    True
    >>> format_size(3 * GiB)
    '3GiB'
"""

from __future__ import annotations

import re

from .errors import InputTypeError, InvalidRangeError

__all__ = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "parse_size", "format_size"]

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40
PiB = 1 << 50
EiB = 1 << 60

_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}
_SIZE = re.compile(r"\s*(0x[0-9a-f]+|\d+)\s*([kmgtpe]?)(?:i?b)?\s*", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Return the number of bytes in ``text`` (an int is returned as it is, if not negative).

    Accepts a decimal or ``0x`` hexadecimal number with an optional suffix
    ``K, M, G, T, P, E`` (optionally followed by ``iB`` or ``B``), case-insensitive.
    Raises :class:`~dcdmap.errors.InvalidRangeError` for text that is not a size.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise InputTypeError(f"a size must be a str or int, not {type(text).__name__}")
    if isinstance(text, int):
        if text < 0:
            raise InvalidRangeError(f"size {text} is negative")
        return text
    m = _SIZE.fullmatch(text)
    if m is None:
        raise InvalidRangeError(f"{text!r} is not a size (try '4096', '2M', '256MiB')")
    number, suffix = m.groups()
    return int(number, 0) << _SHIFT[suffix.lower()]


_UNITS = (("EiB", 60), ("PiB", 50), ("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10))


def format_size(nbytes: int, exact: bool = True) -> str:
    """``nbytes`` in binary units.

    Exact (the default): the largest unit that divides it, ``2097152`` → ``'2MiB'``,
    ``100`` → ``'100B'``.  Not exact: three significant digits, ``202169111488`` → ``'188GiB'``.

    >>> format_size(202169111488, exact=False), format_size(1536, exact=False)
    ('188GiB', '1.5KiB')
    """
    if nbytes < 0:
        raise InvalidRangeError(f"size {nbytes} is negative")
    for suffix, shift in _UNITS:
        if exact and nbytes and nbytes % (1 << shift) == 0:
            return f"{nbytes >> shift}{suffix}"
        if not exact and nbytes >= 1 << shift:
            return f"{nbytes / (1 << shift):.3g}{suffix}".replace("e+", "e")
    return f"{nbytes}B"
