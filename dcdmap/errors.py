"""The one error hierarchy of dcdmap.

Every error dcdmap raises derives from :class:`DcdmapError` *and* from the builtin that
fits it, so callers may catch either::

    >>> import dcdmap
    >>> m = dcdmap.ExtentMap()
    >>> try:
    ...     m.insert(100, 64)
    ... except ValueError as e:          # AlignmentError is a ValueError
    ...     print(type(e).__name__)
    AlignmentError

A failed operation changes nothing: the object is left exactly as it was.
"""

from __future__ import annotations

__all__ = [
    "DcdmapError",
    "InvalidRangeError",
    "AlignmentError",
    "OverlapError",
    "UnmappedError",
    "InputTypeError",
    "ArrayShapeError",
    "CorruptDataError",
    "ConcurrentModificationError",
    "SequenceError",
    "InterleaveError",
]


class DcdmapError(Exception):
    """Base class of every error dcdmap raises."""


class InvalidRangeError(DcdmapError, ValueError):
    """An address or length is out of range: negative, zero length, or an end past 2**64."""


class AlignmentError(InvalidRangeError):
    """An address or length is not a multiple of the granule (or of the requested alignment)."""


class OverlapError(DcdmapError, ValueError):
    """A new range overlaps a range already present (or another range of the same batch)."""


class UnmappedError(DcdmapError, KeyError):
    """An address is not covered by any range of the map."""

    def __str__(self) -> str:  # KeyError would quote the message; say it plainly.
        return str(self.args[0]) if self.args else ""


class InputTypeError(DcdmapError, TypeError):
    """An argument has the wrong type or dtype (a float, a string, a float array, ...)."""


class ArrayShapeError(DcdmapError, ValueError):
    """Batch arrays are not one-dimensional or do not have equal lengths."""


class CorruptDataError(DcdmapError, ValueError):
    """Serialized state is truncated, of an unknown version, or fails its checksum or checks."""


class ConcurrentModificationError(DcdmapError, RuntimeError):
    """An object was mutated while another thread was running a batch call on it."""


class SequenceError(DcdmapError, ValueError):
    """Shared-extent sequence numbers are not exactly 0..n-1 (a gap, a duplicate, a bad start)."""


class InterleaveError(DcdmapError, ValueError):
    """Interleave parameters do not fit the strips (chunk size, strip count or strip lengths)."""
