"""DC regions ("partitions") and the rules a configuration must follow (reference §2).

A :class:`Region` is one DC region as the device holds it: the fields of the Get DC
Configuration record (§2.1) plus the two CDAT DSMAS attributes Linux reads for it
(``shareable``, ``read_only``; §2.3).  :func:`check_regions` applies the validity rules of
the Linux host (``cxl_dc_check``, §2.2) and the limit of 8 regions; the device refuses a
configuration that breaks them, and the host refuses one it reads back.

    >>> r = Region(base=0x8000_0000, length=512 << 20, block_size=2 << 20)
    >>> r.end == 0x8000_0000 + (512 << 20), r.decode_length == 512 << 20
    (True, True)
    >>> check_regions([r, Region(base=0x8000_0000, length=256 << 20)])
    Traceback (most recent call last):
    ...
    dcdmap.errors.ConfigurationError: region 1 [0x80000000, 0x90000000) does not start after region 0 ends at 0xa0000000
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Sequence, Tuple

from ..errors import ConfigurationError
from .records import CAPACITY_MULTIPLIER, MAX_REGIONS, DcRegion

__all__ = ["Region", "check_regions", "assign_handles", "BLOCK_LINE_SIZE"]

MiB = 1 << 20
BLOCK_LINE_SIZE = 0x40          # CXL_DCD_BLOCK_LINE_SIZE: Linux's smallest block size


@dataclass(frozen=True)
class Region:
    """One DC region: ``[base, base + length)`` of DPA handed out in ``block_size`` blocks.

    ``decode_length`` (bytes) defaults to ``length`` rounded up to 256 MiB.  ``shareable``
    and ``read_only`` are the DSMAS attributes of ``dsmad_handle``; a shareable region's
    capacity may be given to several hosts at once under one tag.  ``dsmad_handle=None``
    (the default) gives the region a DSMAS entry of its own: :func:`assign_handles` (the
    device calls it) numbers such regions with handles no other region uses.
    """

    base: int
    length: int
    block_size: int = 2 * MiB
    decode_length: Optional[int] = field(default=None)
    dsmad_handle: Optional[int] = None
    sanitize_on_release: bool = False
    shareable: bool = False
    read_only: bool = False

    def __post_init__(self) -> None:
        for name in ("base", "length", "block_size", "dsmad_handle"):
            value = getattr(self, name)
            if value is None and name == "dsmad_handle":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigurationError(f"region {name} must be a non-negative int, not {value!r}")
        if self.decode_length is None:
            units = -(-self.length // CAPACITY_MULTIPLIER)
            object.__setattr__(self, "decode_length", units * CAPACITY_MULTIPLIER)

    @property
    def end(self) -> int:
        """The first DPA past the region."""
        return self.base + self.length

    def record(self) -> DcRegion:
        """The region as its Get DC Configuration record (its handle must be assigned)."""
        if self.dsmad_handle is None:
            raise ConfigurationError("the region has no DSMAD handle yet (see assign_handles)")
        return DcRegion(self.base, self.decode_length, self.length, self.block_size,
                        self.dsmad_handle, self.sanitize_on_release)

    @classmethod
    def from_record(cls, rec: DcRegion, *, shareable: bool = False, read_only: bool = False) -> "Region":
        """A Region from a configuration record and its DSMAS attributes."""
        return cls(rec.base, rec.length, rec.block_size, rec.decode_length, rec.dsmad_handle,
                   rec.sanitize_on_release, shareable, read_only)


def assign_handles(regions: Sequence[Region]) -> Tuple[Region, ...]:
    """The regions with every ``dsmad_handle=None`` replaced by the smallest handle no other
    region uses, so that each such region has a DSMAS entry of its own.

    >>> [r.dsmad_handle for r in assign_handles([Region(0, 1 << 28), Region(1 << 28, 1 << 28, dsmad_handle=0)])]
    [1, 0]
    """
    used = {r.dsmad_handle for r in regions if r.dsmad_handle is not None}
    out = []
    for r in regions:
        if r.dsmad_handle is None:
            h = next(k for k in range(len(used) + len(regions) + 1) if k not in used)
            used.add(h)
            r = replace(r, dsmad_handle=h)
        out.append(r)
    return tuple(out)


def check_regions(regions: Sequence[Region]) -> None:
    """Raise ConfigurationError naming the first region (and rule) that breaks §2.1–2.2.

    The rules: at most 8 regions; each with length ≠ 0, decode length ≠ 0 and ≥ length and a
    multiple of 256 MiB; block size a power of two and a multiple of 64 bytes; length a
    multiple of the block size; base aligned to 256 MiB and to the block size; regions in
    increasing, non-overlapping DPA order; no region past 2**64; regions that share a DSMAD
    handle share its attributes (``shareable``, ``read_only`` come from that one DSMAS entry).
    """
    if len(regions) > MAX_REGIONS:
        raise ConfigurationError(f"{len(regions)} DC regions; a device has at most {MAX_REGIONS}")
    prev_end = None
    dsmas: dict = {}
    for i, r in enumerate(regions):
        if not isinstance(r, Region):
            raise ConfigurationError(f"region {i} is a {type(r).__name__}, not a Region")
        where = f"region {i} [{r.base:#x}, {r.end:#x})"
        bs = r.block_size
        if r.length == 0:
            raise ConfigurationError(f"{where} has length 0")
        if r.decode_length == 0:
            raise ConfigurationError(f"{where} has decode length 0")
        if r.decode_length < r.length:
            raise ConfigurationError(f"{where}: decode length {r.decode_length:#x} is less than the length")
        if r.decode_length % CAPACITY_MULTIPLIER:
            raise ConfigurationError(f"{where}: decode length {r.decode_length:#x} is not a multiple of 256 MiB")
        if bs == 0 or bs & (bs - 1) or bs % BLOCK_LINE_SIZE:
            raise ConfigurationError(f"{where}: block size {bs:#x} is not a power of two multiple of 64 bytes")
        if r.length % bs:
            raise ConfigurationError(f"{where}: length {r.length:#x} is not a multiple of the block size {bs:#x}")
        if r.base % CAPACITY_MULTIPLIER or r.base % bs:
            raise ConfigurationError(f"{where}: base is not aligned to 256 MiB and to the block size {bs:#x}")
        if r.base + r.decode_length > 1 << 64:
            raise ConfigurationError(f"{where}: the decoded range ends past 2**64")
        if prev_end is not None and r.base < prev_end:
            raise ConfigurationError(f"{where} does not start after region {i - 1} ends at {prev_end:#x}")
        prev_end = r.base + r.decode_length
        attrs = (r.shareable, r.read_only)
        j, seen = dsmas.setdefault(r.dsmad_handle, (i, attrs)) if r.dsmad_handle is not None else (i, attrs)
        if seen != attrs:
            raise ConfigurationError(f"{where}: DSMAD handle {r.dsmad_handle:#x} is also region {j}'s, "
                                     f"with other attributes (shareable, read_only) {seen}")
