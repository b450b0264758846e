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
    "RecordError",
    "RecordTruncatedError",
    "ConfigurationError",
    "ProtocolError",
    "RequestError",
    "MailboxError",
    "HostError",
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


class RecordError(DcdmapError, ValueError):
    """Wire data is malformed, or a record cannot be packed as given.

    ``field`` names the offending field as a path (``"dc_event.flags"``,
    ``"updated_extent_list.extents[3].reserved"``) and ``offset`` is its byte offset in the
    buffer (``None`` when the error is not about one field); the message says both.
    """

    def __init__(self, message: str, field: str | None = None, offset: int | None = None):
        super().__init__(message)
        self.field = field
        self.offset = offset


class RecordTruncatedError(RecordError):
    """A buffer ends before the record or payload it should hold.

    ``needed`` is the number of bytes the record (or, for a payload, its count field) calls
    for and ``got`` the number the buffer has; ``field`` and ``offset`` name the field the
    buffer ends in, or the count field that asks for more bytes than there are.
    """

    def __init__(self, message: str, field: str | None = None, offset: int | None = None,
                 needed: int | None = None, got: int | None = None):
        super().__init__(message, field, offset)
        self.needed = needed
        self.got = got


class ConfigurationError(DcdmapError, ValueError):
    """A device or host configuration breaks a rule (DC region layout, sizes, parameters)."""


class ProtocolError(DcdmapError, ValueError):
    """A step of the DC protocol is refused; the subclasses say who refused it and how."""


class RequestError(ProtocolError):
    """The device refuses an add or release request from the fabric manager (QMP or FM API).

    The message is the text QEMU gives for the same check (reference §5.2) where QEMU has
    one.
    """


class MailboxError(ProtocolError):
    """A mailbox command failed; ``code`` is the CXL return code (a ``ReturnCode``)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class HostError(ProtocolError):
    """The host refuses an operation the way Linux does; ``errno`` is the errno value it
    returns (``errno.ENOENT``, ``errno.EBUSY``, ...)."""

    def __init__(self, message: str, errno: int):
        super().__init__(message)
        self.errno = errno
