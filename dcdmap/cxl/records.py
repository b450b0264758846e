"""CXL Dynamic Capacity wire formats: pack and unpack, byte for byte, one record or many.

Every structure of ``reference/cxl-dcd.md`` §1, §2.1, §3.2 and §3.4–§3.6 has one numpy
structured dtype (little-endian fields at explicit offsets, every reserved byte named, so the
fields tile the record exactly).  The same dtype serves both ways of working:

* **one record at a time**: ``pack_x(obj) -> bytes`` and ``unpack_x(buf) -> obj`` with frozen
  dataclasses (``uuid.UUID`` tags, the null UUID meaning untagged; ints for addresses and
  lengths, in bytes; ``IntEnum`` members for enumerations);
* **many at once**: ``pack_x_array(arr) -> bytes`` and ``unpack_x_array(buf) -> arr`` over
  structured arrays (``np.frombuffer`` / ``tobytes`` and vectorised checks: no Python loop per
  record).  Arrays are the raw wire records, reserved bytes included.

Variable-length payloads (Get DC Configuration and Get DC Extent List output, the Add DC
Response / Release DC input, the FM-API Initiate DC Add / Release input) are dataclasses whose
entry list is either a tuple of record objects (from ``unpack_x``) or a structured array (from
``unpack_x_array``); ``pack_x`` takes either, and the two forms compare equal when they hold
the same records.

Malformed input raises :class:`~dcdmap.errors.RecordError` (a ``ValueError``) naming the field
and its byte offset; a buffer that ends too early raises its subclass
:class:`~dcdmap.errors.RecordTruncatedError`, saying how many bytes were needed.  Non-zero
reserved bytes and bits, and values outside the ranges the reference gives but the real
systems may not check, are refused when ``strict=True`` (the default) and accepted with
``strict=False``; unknown enumeration values, count fields that disagree with the buffer and
region counts over 8 are always refused.  ``docs/cxl.md`` lists every such choice.  When
several fields are bad, the error names the one at the lowest offset.

    >>> from dcdmap.cxl import DcExtent, pack_extent, unpack_extent
    >>> e = DcExtent(start=0x8000_0000, length=0x20_0000)
    >>> raw = pack_extent(e)
    >>> len(raw), raw[:16].hex()
    (40, '00000080000000000000200000000000')
    >>> unpack_extent(raw) == e
    True

Threads: the record classes are immutable and every function is pure (it reads its input and
returns new objects), so all of them may be used from several threads at once.  An input
array must not be mutated by another thread while a call reads it.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, ClassVar, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import (
    ArrayShapeError, DcdmapError, InputTypeError, InvalidRangeError, RecordError, RecordTruncatedError,
)
from ..units import MiB

__all__ = [
    # constants and enumerations
    "CAPACITY_MULTIPLIER", "MAX_REGIONS", "NULL_UUID", "DC_EVENT_LOG_UUID",
    "Opcode", "ReturnCode", "DcEventType", "SelectionPolicy", "RemovalPolicy",
    # dtypes
    "EXTENT_DTYPE", "DC_EVENT_DTYPE", "REGION_DTYPE", "UPDATED_EXTENT_DTYPE",
    "GET_DC_CONFIG_IN_DTYPE", "GET_DC_CONFIG_OUT_HEADER_DTYPE", "GET_DC_CONFIG_OUT_COUNTS_DTYPE",
    "GET_DC_EXTENT_LIST_IN_DTYPE", "GET_DC_EXTENT_LIST_OUT_HEADER_DTYPE",
    "UPDATED_EXTENT_LIST_HEADER_DTYPE", "FM_DC_ADD_HEADER_DTYPE", "FM_DC_RELEASE_HEADER_DTYPE",
    # records and payloads
    "DcExtent", "DcEvent", "DcRegion", "UpdatedExtent",
    "GetDcConfigIn", "GetDcConfigOut", "GetDcExtentListIn", "GetDcExtentListOut",
    "UpdatedExtentList", "FmDcAdd", "FmDcRelease",
    # fixed-size records
    "pack_extent", "unpack_extent", "pack_extent_array", "unpack_extent_array",
    "pack_dc_event", "unpack_dc_event", "pack_dc_event_array", "unpack_dc_event_array",
    "pack_region", "unpack_region", "pack_region_array", "unpack_region_array",
    "pack_updated_extent", "unpack_updated_extent", "pack_updated_extent_array",
    "unpack_updated_extent_array",
    "pack_get_dc_config_in", "unpack_get_dc_config_in",
    "pack_get_dc_extent_list_in", "unpack_get_dc_extent_list_in",
    # variable-length payloads
    "pack_get_dc_config_out", "unpack_get_dc_config_out", "unpack_get_dc_config_out_array",
    "pack_get_dc_extent_list_out", "unpack_get_dc_extent_list_out",
    "unpack_get_dc_extent_list_out_array",
    "pack_updated_extent_list", "unpack_updated_extent_list", "unpack_updated_extent_list_array",
    "split_updated_extent_list", "join_updated_extent_lists",
    "pack_fm_dc_add", "unpack_fm_dc_add", "unpack_fm_dc_add_array",
    "pack_fm_dc_release", "unpack_fm_dc_release", "unpack_fm_dc_release_array",
    # objects <-> arrays
    "records_to_array", "array_to_records",
]

# ---------------------------------------------------------------------------------------------
# Constants and enumerations
# ---------------------------------------------------------------------------------------------

#: Decode Length in a region record counts units of 256 MiB (``CXL_CAPACITY_MULTIPLIER``).
CAPACITY_MULTIPLIER = 256 * MiB
#: A device has at most 8 DC regions (kernel ``CXL_MAX_DC_PARTITIONS``; QEMU "0-8 regions").
MAX_REGIONS = 8
#: The null tag: an untagged extent.
NULL_UUID = uuid.UUID(int=0)
#: The UUID of the Dynamic Capacity event log (reference §3.2).
DC_EVENT_LOG_UUID = uuid.UUID("ca95afa7-f183-4018-8c2f-95268e101a2a")


class Opcode(enum.IntEnum):
    """Mailbox opcodes of Dynamic Capacity (reference §3.1).

    >>> Opcode(0x4802).name, hex(Opcode.FM_INITIATE_DC_RELEASE)
    ('ADD_DC_RESPONSE', '0x5605')
    """

    GET_DC_CONFIG = 0x4800
    GET_DC_EXTENT_LIST = 0x4801
    ADD_DC_RESPONSE = 0x4802
    RELEASE_DC = 0x4803
    FM_GET_DCD_INFO = 0x5600
    FM_GET_HOST_DC_REGION_CONFIG = 0x5601
    FM_SET_DC_REGION_CONFIG = 0x5602
    FM_GET_DC_REGION_EXTENT_LISTS = 0x5603
    FM_INITIATE_DC_ADD = 0x5604
    FM_INITIATE_DC_RELEASE = 0x5605


class ReturnCode(enum.IntEnum):
    """Mailbox return codes used by the DC commands (QEMU ``CXLRetCode``).

    >>> ReturnCode(0x1e).name
    'INVALID_EXTENT_LIST'
    """

    SUCCESS = 0x00
    INVALID_INPUT = 0x02
    UNSUPPORTED = 0x03
    INTERNAL_ERROR = 0x04
    INVALID_PA = 0x0F
    INVALID_PAYLOAD_LENGTH = 0x16
    RESOURCES_EXHAUSTED = 0x1D
    INVALID_EXTENT_LIST = 0x1E


class DcEventType(enum.IntEnum):
    """Event Type of a DC event record (QEMU ``CXLDCEventType``, kernel ``enum dc_event``).

    Types 4 and 5 are seen by the fabric manager only.

    >>> DcEventType(1)
    <DcEventType.RELEASE_CAPACITY: 1>
    """

    ADD_CAPACITY = 0
    RELEASE_CAPACITY = 1
    FORCED_CAPACITY_RELEASE = 2
    REGION_CONFIGURATION_UPDATED = 3
    ADD_CAPACITY_RESPONSE = 4
    CAPACITY_RELEASED = 5


class SelectionPolicy(enum.IntEnum):
    """Selection policy of FM-API Initiate DC Add (5604h), byte 0x02.

    >>> SelectionPolicy.PRESCRIPTIVE.value
    2
    """

    FREE = 0
    CONTIGUOUS = 1
    PRESCRIPTIVE = 2
    ENABLE_SHARED_ACCESS = 3


class RemovalPolicy(enum.IntEnum):
    """Removal policy of FM-API Initiate DC Release (5605h), bits 3:0 of byte 0x02.

    >>> RemovalPolicy(0).name
    'TAG_BASED'
    """

    TAG_BASED = 0
    PRESCRIPTIVE = 1


# ---------------------------------------------------------------------------------------------
# Dtypes: one per wire structure
# ---------------------------------------------------------------------------------------------

def _layout(spec: Sequence[Tuple[str, Any, int]], itemsize: int) -> np.dtype:
    """A packed little-endian structured dtype; the fields must tile ``itemsize`` exactly."""
    names, formats, offsets = (list(x) for x in zip(*spec))
    dt = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": itemsize})
    end = 0
    for name, fmt, off in spec:
        if off != end:
            raise AssertionError(f"layout: field {name} at {off:#x}, expected {end:#x}")
        end = off + np.dtype(fmt).itemsize
    if end != itemsize:
        raise AssertionError(f"layout: fields end at {end:#x}, the record at {itemsize:#x}")
    return dt


#: §1 DC extent record, 40 bytes.
EXTENT_DTYPE = _layout([
    ("start", "<u8", 0x00),
    ("length", "<u8", 0x08),
    ("tag", "V16", 0x10),
    ("shared_seq", "<u2", 0x20),
    ("reserved", "V6", 0x22),
], 0x28)

#: §3.2 DC event record body (the record-specific part after the common event header), 0x50 bytes.
DC_EVENT_DTYPE = _layout([
    ("event_type", "u1", 0x00),
    ("validity_flags", "u1", 0x01),
    ("host_id", "<u2", 0x02),
    ("region_index", "u1", 0x04),
    ("flags", "u1", 0x05),
    ("reserved_06", "V2", 0x06),
    ("extent", EXTENT_DTYPE, 0x08),
    ("reserved_30", "V24", 0x30),
    ("available_extents", "<u4", 0x48),
    ("available_tags", "<u4", 0x4C),
], 0x50)

#: §2.1 region configuration record of Get DC Configuration output, 40 bytes.  The
#: ``decode_length_256mib`` field is in 256 MiB units, as on the wire.
REGION_DTYPE = _layout([
    ("base", "<u8", 0x00),
    ("decode_length_256mib", "<u8", 0x08),
    ("length", "<u8", 0x10),
    ("block_size", "<u8", 0x18),
    ("dsmad_handle", "<u4", 0x20),
    ("flags", "u1", 0x24),
    ("reserved", "V3", 0x25),
], 0x28)

#: §3.4 "Updated Extent" of Add DC Response / Release DC, 24 bytes.
UPDATED_EXTENT_DTYPE = _layout([
    ("start", "<u8", 0x00),
    ("length", "<u8", 0x08),
    ("reserved", "V8", 0x10),
], 0x18)

#: §2.1 Get DC Configuration (4800h) input, 2 bytes.
GET_DC_CONFIG_IN_DTYPE = _layout([
    ("region_count", "u1", 0x00),
    ("start_region", "u1", 0x01),
], 0x02)

#: §2.1 Get DC Configuration output header, 8 bytes (then the region records).
GET_DC_CONFIG_OUT_HEADER_DTYPE = _layout([
    ("available_regions", "u1", 0x00),
    ("regions_returned", "u1", 0x01),
    ("reserved", "V6", 0x02),
], 0x08)

#: §2.1 the four counts after the region records of Get DC Configuration output, 16 bytes.
GET_DC_CONFIG_OUT_COUNTS_DTYPE = _layout([
    ("supported_extents", "<u4", 0x00),
    ("available_extents", "<u4", 0x04),
    ("supported_tags", "<u4", 0x08),
    ("available_tags", "<u4", 0x0C),
], 0x10)

#: §3.5 Get DC Extent List (4801h) input, 8 bytes.
GET_DC_EXTENT_LIST_IN_DTYPE = _layout([
    ("count", "<u4", 0x00),
    ("start_index", "<u4", 0x04),
], 0x08)

#: §3.5 Get DC Extent List output header, 16 bytes (then the extent records).
GET_DC_EXTENT_LIST_OUT_HEADER_DTYPE = _layout([
    ("returned", "<u4", 0x00),
    ("total", "<u4", 0x04),
    ("generation", "<u4", 0x08),
    ("reserved", "V4", 0x0C),
], 0x10)

#: §3.4 Add DC Response (4802h) / Release DC (4803h) input header, 8 bytes.
UPDATED_EXTENT_LIST_HEADER_DTYPE = _layout([
    ("count", "<u4", 0x00),
    ("flags", "u1", 0x04),
    ("reserved", "V3", 0x05),
], 0x08)

#: §3.6 FM-API Initiate DC Add (5604h) input header, 0x20 bytes, packed (``length`` is at 0x04).
FM_DC_ADD_HEADER_DTYPE = _layout([
    ("host_id", "<u2", 0x00),
    ("selection_policy", "u1", 0x02),
    ("region", "u1", 0x03),
    ("length", "<u8", 0x04),
    ("tag", "V16", 0x0C),
    ("extent_count", "<u4", 0x1C),
], 0x20)

#: §3.6 FM-API Initiate DC Release (5605h) input header: as Add, with byte 0x02 the flags.
FM_DC_RELEASE_HEADER_DTYPE = _layout([
    ("host_id", "<u2", 0x00),
    ("flags", "u1", 0x02),
    ("region", "u1", 0x03),
    ("length", "<u8", 0x04),
    ("tag", "V16", 0x0C),
    ("extent_count", "<u4", 0x1C),
], 0x20)

_MORE = 0x01                      # bit 0 of the event flags and of the updated-list flags
_SANITIZE = 0x01                  # bit 0 of the region flags
_REMOVAL_MASK = 0x0F              # bits 3:0 of the FM release flags
_FORCED = 0x10                    # bit 4
_SANITIZE_ON_RELEASE = 0x20       # bit 5
_MAX_DECODE_UNITS = 1 << 36       # 2**36 units of 256 MiB = 2**64 bytes
_ZERO_TAG = bytes(16)
_LAX = "; strict=False accepts it"

# ---------------------------------------------------------------------------------------------
# Record classes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DcExtent:
    """One DC extent (§1): ``[start, start+length)`` of DPA, a tag and a sequence number.

    Wire layout (40 bytes, :data:`EXTENT_DTYPE`): start u64 @0x00, length u64 @0x08,
    tag 16 B @0x10 (``uuid.UUID.bytes`` order), shared_seq u16 @0x20, 6 reserved @0x22.

    >>> DcExtent(0x1000_0000, 0x20_0000).tag == NULL_UUID
    True
    """

    start: int
    length: int
    tag: uuid.UUID = NULL_UUID
    shared_seq: int = 0


@dataclass(frozen=True)
class DcEvent:
    """The record-specific body of a DC event record (§3.2), 0x50 bytes, one extent.

    Wire layout (:data:`DC_EVENT_DTYPE`): event_type u8 @0x00, validity_flags u8 @0x01,
    host_id u16 @0x02, region_index u8 @0x04, flags u8 @0x05 (bit 0 = ``more``), 2 reserved
    @0x06, extent 40 B @0x08, 24 reserved @0x30, available_extents u32 @0x48,
    available_tags u32 @0x4C.  ``validity_flags`` is carried as a raw byte (QEMU writes 1;
    its meaning is unconfirmed), never checked.

    >>> ev = DcEvent(DcEventType.ADD_CAPACITY, DcExtent(0, 0x20_0000), more=True)
    >>> ev.more, ev.validity_flags
    (True, 1)
    """

    event_type: DcEventType
    extent: DcExtent
    more: bool = False
    host_id: int = 0
    region_index: int = 0
    available_extents: int = 0
    available_tags: int = 0
    validity_flags: int = 1


@dataclass(frozen=True)
class DcRegion:
    """One DC region configuration record (§2.1).  ``decode_length`` is in **bytes** here.

    Wire layout (40 bytes, :data:`REGION_DTYPE`): base u64 @0x00, decode length u64 @0x08 in
    256 MiB units, length u64 @0x10, block_size u64 @0x18, dsmad_handle u32 @0x20, flags u8
    @0x24 (bit 0 = ``sanitize_on_release``), 3 reserved @0x25.

    >>> r = DcRegion(base=0x8000_0000, decode_length=512 << 20, length=512 << 20, block_size=512)
    >>> pack_region(r)[8:16].hex()
    '0200000000000000'
    """

    base: int
    decode_length: int
    length: int
    block_size: int
    dsmad_handle: int = 0
    sanitize_on_release: bool = False


@dataclass(frozen=True)
class UpdatedExtent:
    """One 24-byte "Updated Extent" of Add DC Response / Release DC (§3.4): no tag, no seq.

    Wire layout (:data:`UPDATED_EXTENT_DTYPE`): start u64 @0x00, length u64 @0x08, 8 reserved.

    >>> UpdatedExtent(0x1000_0000, 0x20_0000).length
    2097152
    """

    start: int
    length: int


@dataclass(frozen=True)
class GetDcConfigIn:
    """Get DC Configuration (4800h) input (§2.1): region_count u8 @0x00, start_region u8 @0x01.

    >>> pack_get_dc_config_in(GetDcConfigIn(region_count=8, start_region=0))
    b'\\x08\\x00'
    """

    region_count: int
    start_region: int = 0


@dataclass(frozen=True)
class GetDcExtentListIn:
    """Get DC Extent List (4801h) input (§3.5): count u32 @0x00, start_index u32 @0x04.

    >>> pack_get_dc_extent_list_in(GetDcExtentListIn(count=16, start_index=32)).hex()
    '1000000020000000'
    """

    count: int
    start_index: int = 0


class _ListPayload:
    """Shared behaviour of the payloads that carry a list of records.

    The list field (``_list_field``) holds a tuple of record objects or a structured array of
    the record dtype; a list given to the constructor becomes a tuple.  Two payloads are equal
    when their other fields are equal and their lists hold the same wire records, whichever
    form each list has.  Payloads are not hashable (an array entry list is mutable).
    """

    _list_field: ClassVar[str] = "extents"

    def __post_init__(self) -> None:
        value = getattr(self, self._list_field)
        if isinstance(value, list):
            object.__setattr__(self, self._list_field, tuple(value))

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        for f in fields(self):  # type: ignore[arg-type]
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == self._list_field:
                if not _same_records(a, b, _LIST_SPECS[type(self)]):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]


Records = Union[Tuple[Any, ...], np.ndarray]


@dataclass(frozen=True, eq=False)
class GetDcConfigOut(_ListPayload):
    """Get DC Configuration (4800h) output (§2.1).

    Wire layout: available_regions u8 @0x00, regions_returned u8 @0x01 (= ``len(regions)``),
    6 reserved, then ``regions_returned`` × 40-byte region records from 0x08, then four u32
    counts (supported extents, available extents, supported tags, available tags).
    ``regions`` is a tuple of :class:`DcRegion` or an array of :data:`REGION_DTYPE`.

    >>> out = GetDcConfigOut(1, [DcRegion(0x8000_0000, 256 << 20, 256 << 20, 0x20_0000)],
    ...                      supported_extents=512, available_extents=512)
    >>> len(pack_get_dc_config_out(out))
    64
    """

    available_regions: int
    regions: Records = ()
    supported_extents: int = 0
    available_extents: int = 0
    supported_tags: int = 0
    available_tags: int = 0

    _list_field: ClassVar[str] = "regions"


@dataclass(frozen=True, eq=False)
class GetDcExtentListOut(_ListPayload):
    """Get DC Extent List (4801h) output (§3.5).

    Wire layout: returned u32 @0x00 (= ``len(extents)``), total u32 @0x04, generation u32
    @0x08, 4 reserved, then ``returned`` × 40-byte extents from 0x10.  ``extents`` is a tuple
    of :class:`DcExtent` or an array of :data:`EXTENT_DTYPE`.

    >>> out = GetDcExtentListOut(total_extents=3, generation=7, extents=[DcExtent(0, 64)])
    >>> pack_get_dc_extent_list_out(out)[:16].hex()
    '01000000030000000700000000000000'
    """

    total_extents: int
    generation: int
    extents: Records = ()


@dataclass(frozen=True, eq=False)
class UpdatedExtentList(_ListPayload):
    """Add DC Response (4802h) or Release DC (4803h) input (§3.4): both have this layout.

    Wire layout: count u32 @0x00 (= ``len(extents)``), flags u8 @0x04 (bit 0 = ``more``:
    further payloads follow), 3 reserved, then ``count`` × 24-byte updated extents from 0x08.
    ``extents`` is a tuple of :class:`UpdatedExtent` or an array of
    :data:`UPDATED_EXTENT_DTYPE`.  An empty Add DC Response rejects everything offered.

    >>> raw = pack_updated_extent_list(UpdatedExtentList([UpdatedExtent(0x20_0000, 0x20_0000)]))
    >>> raw.hex(" ", 8)
    '0100000000000000 0000200000000000 0000200000000000 0000000000000000'
    """

    extents: Records = ()
    more: bool = False


@dataclass(frozen=True, eq=False)
class FmDcAdd(_ListPayload):
    """FM-API Initiate Dynamic Capacity Add (5604h) input (§3.6).

    Wire layout (packed): host_id u16 @0x00, selection_policy u8 @0x02, region u8 @0x03,
    length u64 @0x04, tag 16 B @0x0C, extent_count u32 @0x1C (= ``len(extents)``), then
    40-byte extents from 0x20.  ``extents`` is a tuple of :class:`DcExtent` or an array of
    :data:`EXTENT_DTYPE`.

    >>> add = FmDcAdd(host_id=1, selection_policy=SelectionPolicy.PRESCRIPTIVE, region=0,
    ...               extents=[DcExtent(0, 0x20_0000)])
    >>> len(pack_fm_dc_add(add))
    72
    """

    host_id: int
    selection_policy: SelectionPolicy
    region: int
    length: int = 0
    tag: uuid.UUID = NULL_UUID
    extents: Records = ()


@dataclass(frozen=True, eq=False)
class FmDcRelease(_ListPayload):
    """FM-API Initiate Dynamic Capacity Release (5605h) input (§3.6).

    As :class:`FmDcAdd` except byte 0x02, the flags: bits 3:0 ``removal_policy``, bit 4
    ``forced_removal``, bit 5 ``sanitize_on_release``, bits 7:6 reserved.

    >>> rel = FmDcRelease(0, RemovalPolicy.PRESCRIPTIVE, 0, forced_removal=True)
    >>> pack_fm_dc_release(rel)[2]
    17
    """

    host_id: int
    removal_policy: RemovalPolicy
    region: int
    length: int = 0
    tag: uuid.UUID = NULL_UUID
    extents: Records = ()
    forced_removal: bool = False
    sanitize_on_release: bool = False


# ---------------------------------------------------------------------------------------------
# Locations and errors
# ---------------------------------------------------------------------------------------------


class _Loc(NamedTuple):
    """Where records sit in a buffer: field paths and byte offsets for error messages.

    ``path`` is the record's field path, ``{i}`` standing for its index when the records are
    many (``"dc_event[{i}]"``); ``base`` is the offset of record 0 and ``stride`` the bytes from
    one record to the next.
    """

    path: str
    base: int
    stride: int

    def name(self, i: int, field: str) -> str:
        return f"{self.path.format(i=i)}.{field}"

    def offset(self, i: int, off: int) -> int:
        return self.base + i * self.stride + off

    def nested(self, field: str, off: int) -> "_Loc":
        return _Loc(f"{self.path}.{field}", self.base + off, self.stride)

    @property
    def whole(self) -> str:
        """The path of the records as a whole: ``dc_event[{i}]`` -> ``dc_event``."""
        return self.path.replace("[{i}]", "")


def _error(loc: _Loc, i: int, field: str, off: int, message: str) -> RecordError:
    name, at = loc.name(i, field), loc.offset(i, off)
    return RecordError(f"{name} at offset {at:#x}: {message}", name, at)


def _raise_first(errors: Iterable[Optional[RecordError]]) -> None:
    """Raise the error at the lowest offset, if any."""
    found = [e for e in errors if e is not None]
    if found:
        raise min(found, key=lambda e: e.offset if e.offset is not None else -1)


def _first(mask: np.ndarray) -> Optional[int]:
    return int(mask.argmax()) if mask.size and mask.any() else None


def _field_at(dtype: np.dtype, rel: int) -> Tuple[str, int]:
    """The (dotted) name and record offset of the field holding byte ``rel`` of a record."""
    for name in dtype.names:
        fdt, off = dtype.fields[name][:2]
        if off <= rel < off + fdt.itemsize:
            if fdt.names:
                sub, suboff = _field_at(fdt, rel - off)
                return f"{name}.{sub}", off + suboff
            return name, off
    raise AssertionError(f"no field at {rel:#x}")


class _Seg(NamedTuple):
    """One part of a payload: ``count`` records of ``dtype`` at ``loc`` (count None: one, unindexed)."""

    loc: _Loc
    dtype: np.dtype
    count: Optional[int] = None


def _cut(segs: Sequence[_Seg], at: int) -> Tuple[str, int]:
    """The field path and offset of the byte ``at`` of a payload made of ``segs``."""
    for seg in segs:
        size = seg.dtype.itemsize
        span = size * (1 if seg.count is None else seg.count)
        if seg.loc.base <= at < seg.loc.base + span:
            i, rel = divmod(at - seg.loc.base, size)
            field, off = _field_at(seg.dtype, rel)
            return seg.loc.name(i, field), seg.loc.offset(i, off)
    raise AssertionError(f"no field at {at:#x}")


def _truncated(name: str, at: int, message: str, needed: int, got: int) -> RecordTruncatedError:
    return RecordTruncatedError(f"{name} at offset {at:#x}: {message}", name, at, needed, got)


def _buffer(buf: Any, path: str) -> memoryview:
    """A flat byte view of any C-contiguous buffer (bytes, bytearray, memoryview, ndarray)."""
    if isinstance(buf, str):
        raise InputTypeError(f"{path}: expected bytes or another buffer, got str")
    try:
        mv = memoryview(buf)
    except TypeError:
        raise InputTypeError(
            f"{path}: expected bytes or another buffer, got {type(buf).__name__}") from None
    if not mv.c_contiguous:
        raise InputTypeError(f"{path}: the buffer is not C-contiguous")
    return mv if (mv.ndim == 1 and mv.format in ("B", "b", "c")) else mv.cast("B")


def _view(mv: memoryview, dtype: np.dtype, offset: int, count: int) -> np.ndarray:
    """``count`` records of ``dtype`` at ``offset`` of ``mv`` (a read-only view; no copy)."""
    if count == 0:
        return np.zeros(0, dtype)
    return np.frombuffer(mv, dtype, count=count, offset=offset)


def _owned(mv: memoryview, dtype: np.dtype, offset: int, count: int) -> np.ndarray:
    """A new array owning a copy of ``count`` records at ``offset``.

    The bytes are copied as ``uint8`` and then viewed: one memcpy, where copying a structured
    view would go field by field.
    """
    if count == 0:
        return np.zeros(0, dtype)
    raw = np.frombuffer(mv, np.uint8, count=count * dtype.itemsize, offset=offset).copy()
    return raw.view(dtype)


# ---------------------------------------------------------------------------------------------
# Checks: one rule table per structure, two interpreters (many records / one record)
# ---------------------------------------------------------------------------------------------


class _Rule(NamedTuple):
    """One validity rule on one field of a wire structure.

    ``kind`` is ``"reserved"`` (the bytes must be zero), ``"bits"`` (only the bits in ``arg``
    may be set), ``"enum"`` (the value, or the bits ``mask`` of it, must be a member of the
    0-based IntEnum ``arg``) or ``"max"`` (the value must be at most ``arg``).  ``strict``
    rules are checked only when the caller asks for strict checking.
    """

    field: str                # dotted path inside the record: "extent.reserved"
    off: int                  # the field's offset inside the record
    kind: str
    arg: Any = None
    why: str = ""
    strict: bool = True
    mask: int = 0


class _Rules(NamedTuple):
    """The rules of one dtype, sorted by offset, each with its index path into a row tuple."""

    rules: Tuple[_Rule, ...]
    paths: Tuple[Tuple[int, ...], ...]


def _rules(dtype: np.dtype, *rules: _Rule) -> _Rules:
    def path(dt: np.dtype, dotted: str) -> Tuple[int, ...]:
        head, _, rest = dotted.partition(".")
        k = dt.names.index(head)
        return (k,) + (path(dt.fields[head][0], rest) if rest else ())

    ordered = tuple(sorted(rules, key=lambda r: r.off))
    for r in ordered:  # the offsets in the table must be the dtype's
        sub, off = dtype, 0
        for part in r.field.split("."):
            sub, o = sub.fields[part][:2]
            off += o
        if off != r.off:
            raise AssertionError(f"rule on {r.field}: offset {r.off:#x}, dtype says {off:#x}")
    return _Rules(ordered, tuple(path(dtype, r.field) for r in ordered))


def _rule_error(rule: _Rule, loc: _Loc, i: int, value: Any) -> RecordError:
    if rule.kind == "reserved":
        message = f"reserved bytes must be zero, found {bytes(value).hex()}"
    elif rule.kind == "bits":
        bad = value & ~rule.arg & 0xFF
        message = f"reserved bits {bad:#04x} are set in {value:#04x} ({rule.why})"
    elif rule.kind == "enum":
        top = len(rule.arg) - 1
        shown = value & rule.mask if rule.mask else value
        message = f"unknown {rule.arg.__name__} value {shown} (known: 0..{top})"
    else:
        message = f"{value} is over {rule.arg}: {rule.why}"
    return _error(loc, i, rule.field, rule.off, message + (_LAX if rule.strict else ""))


def _violates(rule: _Rule, value: Any) -> bool:
    """The scalar interpreter: ``value`` is an int, or bytes for a reserved field."""
    if rule.kind == "reserved":
        return any(value)
    if rule.kind == "bits":
        return bool(value & ~rule.arg & 0xFF)
    if rule.kind == "enum":
        return (value & rule.mask if rule.mask else value) > len(rule.arg) - 1
    return value > rule.arg


def _check_row(table: _Rules, row: tuple, loc: _Loc, strict: bool, i: int = 0) -> Optional[RecordError]:
    """The first (lowest-offset) rule that the row tuple (nested for nested fields) breaks."""
    for rule, path in zip(table.rules, table.paths):
        if rule.strict and not strict:
            continue
        value = row
        for k in path:
            value = value[k]
        if _violates(rule, value):
            return _rule_error(rule, loc, i, value)
    return None


def _check_array(table: _Rules, a: np.ndarray, loc: _Loc, strict: bool) -> List[RecordError]:
    """The vectorised interpreter: for each rule, the first record that breaks it."""
    found = []
    if len(a) == 0:
        return found
    for rule in table.rules:
        if rule.strict and not strict:
            continue
        col = a
        for part in rule.field.split("."):
            col = col[part]
        if rule.kind == "reserved":
            bad = col != np.void(bytes(col.dtype.itemsize))
        elif rule.kind == "bits":
            bad = (col & np.uint8(~rule.arg & 0xFF)) != 0
        elif rule.kind == "enum":
            bad = ((col & np.uint8(rule.mask)) if rule.mask else col) > len(rule.arg) - 1
        else:
            bad = col > rule.arg
        i = _first(bad)
        if i is not None:
            value = col[i].tobytes() if rule.kind == "reserved" else int(col[i])
            found.append(_rule_error(rule, loc, i, value))
    return found


_REGION_INDEX = "a DC region index is 0..7"
_EXTENT_RULES = _rules(EXTENT_DTYPE, _Rule("reserved", 0x22, "reserved"))
_EVENT_RULES = _rules(
    DC_EVENT_DTYPE,
    _Rule("event_type", 0x00, "enum", DcEventType, strict=False),
    _Rule("region_index", 0x04, "max", MAX_REGIONS - 1, _REGION_INDEX),
    _Rule("flags", 0x05, "bits", _MORE, "only bit 0, More, is defined"),
    _Rule("reserved_06", 0x06, "reserved"),
    _Rule("extent.reserved", 0x2A, "reserved"),
    _Rule("reserved_30", 0x30, "reserved"),
)
_REGION_RULES = _rules(
    REGION_DTYPE,
    _Rule("decode_length_256mib", 0x08, "max", _MAX_DECODE_UNITS - 1,
          "that many 256 MiB units is 2**64 bytes or more", strict=False),
    _Rule("flags", 0x24, "bits", _SANITIZE, "only bit 0, Sanitize on Release, is defined"),
    _Rule("reserved", 0x25, "reserved"),
)
_UPDATED_RULES = _rules(UPDATED_EXTENT_DTYPE, _Rule("reserved", 0x10, "reserved"))
_CFG_IN_RULES = _rules(
    GET_DC_CONFIG_IN_DTYPE,
    _Rule("region_count", 0x00, "max", MAX_REGIONS, "a device has at most 8 DC regions"),
    _Rule("start_region", 0x01, "max", MAX_REGIONS - 1, _REGION_INDEX),
)
_CFG_OUT_RULES = _rules(
    GET_DC_CONFIG_OUT_HEADER_DTYPE,
    _Rule("available_regions", 0x00, "max", MAX_REGIONS, "a device has at most 8 DC regions",
          strict=False),
    _Rule("reserved", 0x02, "reserved"),
)
_LIST_OUT_RULES = _rules(GET_DC_EXTENT_LIST_OUT_HEADER_DTYPE, _Rule("reserved", 0x0C, "reserved"))
_ULIST_RULES = _rules(
    UPDATED_EXTENT_LIST_HEADER_DTYPE,
    _Rule("flags", 0x04, "bits", _MORE, "only bit 0, More, is defined"),
    _Rule("reserved", 0x05, "reserved"),
)
_FM_ADD_RULES = _rules(
    FM_DC_ADD_HEADER_DTYPE,
    _Rule("selection_policy", 0x02, "enum", SelectionPolicy, strict=False),
    _Rule("region", 0x03, "max", MAX_REGIONS - 1, _REGION_INDEX),
)
_FM_RELEASE_RULES = _rules(
    FM_DC_RELEASE_HEADER_DTYPE,
    _Rule("flags", 0x02, "enum", RemovalPolicy, strict=False, mask=_REMOVAL_MASK),
    _Rule("flags", 0x02, "bits", _REMOVAL_MASK | _FORCED | _SANITIZE_ON_RELEASE,
          "bits 3:0 removal policy, bit 4 forced removal, bit 5 sanitize on release; "
          "bits 7:6 are reserved"),
    _Rule("region", 0x03, "max", MAX_REGIONS - 1, _REGION_INDEX),
)


# ---------------------------------------------------------------------------------------------
# Objects -> rows (per-field checks with names and offsets)
# ---------------------------------------------------------------------------------------------


def _uint(value: Any, bits: int, loc: _Loc, i: int, field: str, off: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"{loc.name(i, field)} at offset {loc.offset(i, off):#x}: "
                             f"expected an int, got {type(value).__name__}")
    v = int(value)
    if not 0 <= v < 1 << bits:
        raise _error(loc, i, field, off, f"{v} does not fit in an unsigned {bits}-bit field")
    return v


def _flag(value: Any, loc: _Loc, i: int, field: str, off: int) -> bool:
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer))
                                               and value in (0, 1)):
        return bool(value)
    raise InputTypeError(f"{loc.name(i, field)} at offset {loc.offset(i, off):#x}: "
                         f"expected a bool, got {value!r}")


def _member(value: Any, kind: Any, loc: _Loc, i: int, field: str, off: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"{loc.name(i, field)} at offset {loc.offset(i, off):#x}: "
                             f"expected a {kind.__name__}, got {type(value).__name__}")
    try:
        return int(kind(int(value)))
    except ValueError:
        raise _error(loc, i, field, off, f"unknown {kind.__name__} value {int(value)} "
                                         f"(known: 0..{len(kind) - 1})") from None


def _tag_bytes(value: Any, loc: _Loc, i: int, field: str, off: int) -> bytes:
    if not isinstance(value, uuid.UUID):
        raise InputTypeError(f"{loc.name(i, field)} at offset {loc.offset(i, off):#x}: "
                             f"expected a uuid.UUID (NULL_UUID for untagged), "
                             f"got {type(value).__name__}")
    return value.bytes


def _tag(raw: bytes) -> uuid.UUID:
    return NULL_UUID if raw == _ZERO_TAG else uuid.UUID(bytes=raw)


def _is(obj: Any, cls: type, loc: _Loc, i: int = 0) -> None:
    if not isinstance(obj, cls):
        raise InputTypeError(f"{loc.path.format(i=i)}: expected a {cls.__name__}, "
                             f"got {type(obj).__name__}")


def _extent_row(e: Any, loc: _Loc, i: int) -> tuple:
    _is(e, DcExtent, loc, i)
    return (_uint(e.start, 64, loc, i, "start", 0x00), _uint(e.length, 64, loc, i, "length", 0x08),
            _tag_bytes(e.tag, loc, i, "tag", 0x10),
            _uint(e.shared_seq, 16, loc, i, "shared_seq", 0x20), bytes(6))


def _extent_obj(t: tuple) -> DcExtent:
    return DcExtent(t[0], t[1], _tag(t[2]), t[3])


def _event_row(ev: Any, loc: _Loc, i: int) -> tuple:
    _is(ev, DcEvent, loc, i)
    return (_member(ev.event_type, DcEventType, loc, i, "event_type", 0x00),
            _uint(ev.validity_flags, 8, loc, i, "validity_flags", 0x01),
            _uint(ev.host_id, 16, loc, i, "host_id", 0x02),
            _uint(ev.region_index, 8, loc, i, "region_index", 0x04),
            _MORE if _flag(ev.more, loc, i, "more", 0x05) else 0,
            bytes(2),
            _extent_row(ev.extent, loc.nested("extent", 0x08), i),
            bytes(24),
            _uint(ev.available_extents, 32, loc, i, "available_extents", 0x48),
            _uint(ev.available_tags, 32, loc, i, "available_tags", 0x4C))


def _event_obj(t: tuple) -> DcEvent:
    return DcEvent(DcEventType(t[0]), _extent_obj(t[6]), bool(t[4] & _MORE), t[2], t[3], t[8],
                   t[9], t[1])


def _region_row(r: Any, loc: _Loc, i: int) -> tuple:
    _is(r, DcRegion, loc, i)
    decode = _uint(r.decode_length, 64, loc, i, "decode_length", 0x08)
    if decode % CAPACITY_MULTIPLIER:
        raise _error(loc, i, "decode_length", 0x08,
                     f"{decode:#x} bytes is not a multiple of 256 MiB (the wire field counts "
                     f"256 MiB units, CXL_CAPACITY_MULTIPLIER)")
    return (_uint(r.base, 64, loc, i, "base", 0x00), decode // CAPACITY_MULTIPLIER,
            _uint(r.length, 64, loc, i, "length", 0x10),
            _uint(r.block_size, 64, loc, i, "block_size", 0x18),
            _uint(r.dsmad_handle, 32, loc, i, "dsmad_handle", 0x20),
            _SANITIZE if _flag(r.sanitize_on_release, loc, i, "sanitize_on_release", 0x24) else 0,
            bytes(3))


def _region_obj(t: tuple) -> DcRegion:
    return DcRegion(t[0], t[1] * CAPACITY_MULTIPLIER, t[2], t[3], t[4], bool(t[5] & _SANITIZE))


def _updated_row(u: Any, loc: _Loc, i: int) -> tuple:
    _is(u, UpdatedExtent, loc, i)
    return (_uint(u.start, 64, loc, i, "start", 0x00), _uint(u.length, 64, loc, i, "length", 0x08),
            bytes(8))


def _updated_obj(t: tuple) -> UpdatedExtent:
    return UpdatedExtent(t[0], t[1])


class _Rec(NamedTuple):
    """How one fixed-size record type converts and checks."""

    path: str                     # root of field paths: 'extent'
    what: str                     # for messages: 'a DC extent record'
    cls: type
    dtype: np.dtype
    row: Callable[[Any, _Loc, int], tuple]
    obj: Callable[[tuple], Any]
    rules: _Rules


_EXTENT = _Rec("extent", "a DC extent record", DcExtent, EXTENT_DTYPE, _extent_row, _extent_obj,
               _EXTENT_RULES)
_EVENT = _Rec("dc_event", "a DC event record body", DcEvent, DC_EVENT_DTYPE, _event_row,
              _event_obj, _EVENT_RULES)
_REGION = _Rec("region", "a DC region record", DcRegion, REGION_DTYPE, _region_row, _region_obj,
               _REGION_RULES)
_UPDATED = _Rec("updated_extent", "an updated extent", UpdatedExtent, UPDATED_EXTENT_DTYPE,
                _updated_row, _updated_obj, _UPDATED_RULES)
_BY_CLASS = {r.cls: r for r in (_EXTENT, _EVENT, _REGION, _UPDATED)}
_BY_DTYPE = {r.dtype: r for r in (_EXTENT, _EVENT, _REGION, _UPDATED)}
_LIST_SPECS = {GetDcConfigOut: _REGION, GetDcExtentListOut: _EXTENT, UpdatedExtentList: _UPDATED,
               FmDcAdd: _EXTENT, FmDcRelease: _EXTENT}


def _rows_array(rec: _Rec, objs: Iterable[Any], loc: _Loc) -> np.ndarray:
    rows = [rec.row(o, loc, i) for i, o in enumerate(objs)]
    return np.array(rows, dtype=rec.dtype) if rows else np.zeros(0, rec.dtype)


def _as_records_array(rec: _Rec, value: Any, loc: _Loc) -> np.ndarray:
    """A contiguous 1-D array of ``rec.dtype`` from an array of that dtype or a sequence of objects."""
    if isinstance(value, np.ndarray):
        if value.dtype != rec.dtype:
            raise InputTypeError(f"{loc.whole}: expected an array of the {rec.cls.__name__} "
                                 f"dtype, got {value.dtype}")
        if value.ndim != 1:
            raise ArrayShapeError(f"{loc.whole}: expected a 1-D array, got shape {value.shape}")
        return np.ascontiguousarray(value)
    if isinstance(value, (str, bytes, bytearray, memoryview)) or not isinstance(value, Iterable):
        raise InputTypeError(f"{loc.whole}: expected a sequence of {rec.cls.__name__} or an "
                             f"array, got {type(value).__name__}")
    return _rows_array(rec, value, loc)


def _same_records(a: Any, b: Any, rec: _Rec) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):
        return a == b
    loc = _Loc(rec.path + "[{i}]", 0, rec.dtype.itemsize)
    try:
        a, b = _as_records_array(rec, a, loc), _as_records_array(rec, b, loc)
    except DcdmapError:
        return False
    return len(a) == len(b) and a.tobytes() == b.tobytes()


# ---------------------------------------------------------------------------------------------
# Fixed-size records: generic engines
# ---------------------------------------------------------------------------------------------


def _nbytes(n: int) -> str:
    return "1 byte" if n == 1 else f"{n} bytes"


def _exact_row(mv: memoryview, dtype: np.dtype, path: str, what: str) -> tuple:
    """The one record that ``mv`` must hold exactly, as a (nested) tuple."""
    size, n = dtype.itemsize, len(mv)
    if n < size:
        field, off = _field_at(dtype, n)
        raise _truncated(f"{path}.{field}", off,
                         f"the buffer ends here; {what} needs {size} bytes, got {n}", size, n)
    if n > size:
        raise RecordError(f"{path} at offset {size:#x}: {_nbytes(n - size)} past the end of "
                          f"{what} ({size} bytes)", path, size)
    return _view(mv, dtype, 0, 1).tolist()[0]


def _pack_one(rec: _Rec, obj: Any, strict: bool) -> bytes:
    loc = _Loc(rec.path, 0, rec.dtype.itemsize)
    row = rec.row(obj, loc, 0)
    _raise_first([_check_row(rec.rules, row, loc, strict)])
    return np.array([row], dtype=rec.dtype).tobytes()


def _unpack_one(rec: _Rec, buf: Any, strict: bool) -> Any:
    row = _exact_row(_buffer(buf, rec.path), rec.dtype, rec.path, rec.what)
    _raise_first([_check_row(rec.rules, row, _Loc(rec.path, 0, rec.dtype.itemsize), strict)])
    return rec.obj(row)


def _pack_many(rec: _Rec, arr: Any, strict: bool) -> bytes:
    loc = _Loc(rec.path + "[{i}]", 0, rec.dtype.itemsize)
    if not isinstance(arr, np.ndarray):
        raise InputTypeError(f"{rec.path}: expected a structured array of the {rec.cls.__name__} "
                             f"dtype, got {type(arr).__name__} (records_to_array converts)")
    arr = _as_records_array(rec, arr, loc)
    _raise_first(_check_array(rec.rules, arr, loc, strict))
    return arr.tobytes()


def _unpack_many(rec: _Rec, buf: Any, strict: bool) -> np.ndarray:
    mv = _buffer(buf, rec.path)
    size = rec.dtype.itemsize
    n, rem = divmod(len(mv), size)
    if rem:
        field, off = _field_at(rec.dtype, rem)
        raise _truncated(f"{rec.path}[{n}].{field}", n * size + off,
                         f"the buffer ends inside record {n}: {len(mv)} bytes is {n} whole "
                         f"{size}-byte records and {_nbytes(rem)} of the next",
                         (n + 1) * size, len(mv))
    loc = _Loc(rec.path + "[{i}]", 0, size)
    _raise_first(_check_array(rec.rules, _view(mv, rec.dtype, 0, n), loc, strict))
    return _owned(mv, rec.dtype, 0, n)


# ---------------------------------------------------------------------------------------------
# Fixed-size records: public functions
# ---------------------------------------------------------------------------------------------


def pack_extent(extent: DcExtent, *, strict: bool = True) -> bytes:
    """The 40 bytes of one DC extent record (§1).

    Raises :class:`RecordError` for a value that does not fit its field and
    :class:`~dcdmap.errors.InputTypeError` for a wrong type (a tag that is not a UUID).

    >>> tag = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
    >>> pack_extent(DcExtent(0x40, 0x80, tag, shared_seq=2))[16:40].hex()
    '00112233445566778899aabbccddeeff0200000000000000'
    """
    return _pack_one(_EXTENT, extent, strict)


def unpack_extent(buf: Any, *, strict: bool = True) -> DcExtent:
    """One DC extent from exactly 40 bytes.

    Raises :class:`RecordTruncatedError` for fewer bytes, :class:`RecordError` for more, and
    (when ``strict``) for non-zero reserved bytes 0x22..0x27.

    >>> raw = bytes.fromhex("00100000000000000010000000000000") + bytes(24)
    >>> unpack_extent(raw)
    DcExtent(start=4096, length=4096, tag=UUID('00000000-0000-0000-0000-000000000000'), shared_seq=0)
    """
    return _unpack_one(_EXTENT, buf, strict)


def pack_extent_array(extents: np.ndarray, *, strict: bool = True) -> bytes:
    """Many DC extent records: an array of :data:`EXTENT_DTYPE` as 40-byte records, end to end.

    O(n), no Python loop per record.  With ``strict`` (the default), non-zero reserved bytes
    in the array are refused; ``strict=False`` writes them as they are.

    >>> a = np.zeros(2, EXTENT_DTYPE)
    >>> a["start"] = [0, 0x20_0000]; a["length"] = 0x20_0000
    >>> len(pack_extent_array(a))
    80
    """
    return _pack_many(_EXTENT, extents, strict)


def unpack_extent_array(buf: Any, *, strict: bool = True) -> np.ndarray:
    """40-byte DC extent records, end to end, as a new array of :data:`EXTENT_DTYPE`.

    O(n), no Python loop per record.  Raises :class:`RecordTruncatedError` when the length is
    not a multiple of 40 (naming the field the buffer ends in).

    >>> a = unpack_extent_array(bytes(80))
    >>> a.shape, a.dtype == EXTENT_DTYPE
    ((2,), True)
    """
    return _unpack_many(_EXTENT, buf, strict)


def pack_dc_event(event: DcEvent, *, strict: bool = True) -> bytes:
    """The 0x50-byte body of one DC event record (§3.2).

    With ``strict``, a region index over 7 is refused.

    >>> ev = DcEvent(DcEventType.RELEASE_CAPACITY, DcExtent(0x1000, 0x40), more=True,
    ...              host_id=2, region_index=1, available_extents=511)
    >>> raw = pack_dc_event(ev)
    >>> raw[:8].hex(), raw[0x48:].hex()
    ('0101020001010000', 'ff01000000000000')
    """
    return _pack_one(_EVENT, event, strict)


def unpack_dc_event(buf: Any, *, strict: bool = True) -> DcEvent:
    """One DC event record body from exactly 0x50 bytes.

    Unknown event types are always refused; with ``strict``, so are reserved bits of the flags
    byte, non-zero reserved bytes (0x06, 0x30 and the extent's) and a region index over 7.

    >>> ev = unpack_dc_event(bytes.fromhex("0001000000010000") + bytes(72))
    >>> ev.event_type.name, ev.more, ev.validity_flags
    ('ADD_CAPACITY', True, 1)
    """
    return _unpack_one(_EVENT, buf, strict)


def pack_dc_event_array(events: np.ndarray, *, strict: bool = True) -> bytes:
    """Many DC event record bodies from an array of :data:`DC_EVENT_DTYPE`; O(n), no Python loop.

    >>> ev = np.zeros(3, DC_EVENT_DTYPE)
    >>> ev["extent"]["start"] = [0, 64, 128]; ev["extent"]["length"] = 64
    >>> ev["flags"][:-1] = 1                  # a More chain: More on all but the last
    >>> len(pack_dc_event_array(ev))
    240
    """
    return _pack_many(_EVENT, events, strict)


def unpack_dc_event_array(buf: Any, *, strict: bool = True) -> np.ndarray:
    """0x50-byte DC event record bodies, end to end, as an array of :data:`DC_EVENT_DTYPE`.

    >>> ev = unpack_dc_event_array(bytes(0xA0))
    >>> ev["extent"]["length"].tolist()
    [0, 0]
    """
    return _unpack_many(_EVENT, buf, strict)


def pack_region(region: DcRegion, *, strict: bool = True) -> bytes:
    """One 40-byte DC region record (§2.1); ``decode_length`` (bytes) must be a multiple of 256 MiB.

    >>> pack_region(DcRegion(0, 1 << 30, 1 << 30, 0x20_0000, 0xFA, True))[0x20:].hex()
    'fa00000001000000'
    """
    return _pack_one(_REGION, region, strict)


def unpack_region(buf: Any, *, strict: bool = True) -> DcRegion:
    """One DC region record from exactly 40 bytes; the decode length comes back in bytes.

    >>> r = unpack_region(bytes(8) + (4).to_bytes(8, "little") + bytes(24))
    >>> r.decode_length == 1 << 30
    True
    """
    return _unpack_one(_REGION, buf, strict)


def pack_region_array(regions: np.ndarray, *, strict: bool = True) -> bytes:
    """Many region records from an array of :data:`REGION_DTYPE` (decode length in 256 MiB units).

    >>> r = np.zeros(1, REGION_DTYPE); r["decode_length_256mib"] = 2
    >>> pack_region_array(r)[8:16].hex()
    '0200000000000000'
    """
    return _pack_many(_REGION, regions, strict)


def unpack_region_array(buf: Any, *, strict: bool = True) -> np.ndarray:
    """40-byte region records, end to end, as an array of :data:`REGION_DTYPE`.

    >>> unpack_region_array(bytes(120)).shape
    (3,)
    """
    return _unpack_many(_REGION, buf, strict)


def pack_updated_extent(extent: UpdatedExtent, *, strict: bool = True) -> bytes:
    """One 24-byte updated extent (§3.4).

    >>> pack_updated_extent(UpdatedExtent(0x40, 0x40)).hex()
    '400000000000000040000000000000000000000000000000'
    """
    return _pack_one(_UPDATED, extent, strict)


def unpack_updated_extent(buf: Any, *, strict: bool = True) -> UpdatedExtent:
    """One updated extent from exactly 24 bytes.

    >>> unpack_updated_extent((64).to_bytes(8, "little") * 2 + bytes(8))
    UpdatedExtent(start=64, length=64)
    """
    return _unpack_one(_UPDATED, buf, strict)


def pack_updated_extent_array(extents: np.ndarray, *, strict: bool = True) -> bytes:
    """Many 24-byte updated extents from an array of :data:`UPDATED_EXTENT_DTYPE`.

    >>> len(pack_updated_extent_array(np.zeros(4, UPDATED_EXTENT_DTYPE)))
    96
    """
    return _pack_many(_UPDATED, extents, strict)


def unpack_updated_extent_array(buf: Any, *, strict: bool = True) -> np.ndarray:
    """24-byte updated extents, end to end, as an array of :data:`UPDATED_EXTENT_DTYPE`.

    >>> unpack_updated_extent_array(bytes(48))["start"].tolist()
    [0, 0]
    """
    return _unpack_many(_UPDATED, buf, strict)


# --- the two small fixed inputs --------------------------------------------------------------

_CFG_IN = "get_dc_config_in"
_LIST_IN = "get_dc_extent_list_in"


def pack_get_dc_config_in(request: GetDcConfigIn, *, strict: bool = True) -> bytes:
    """The 2-byte Get DC Configuration (4800h) input.

    With ``strict``, a region count over 8 or a start region over 7 is refused.

    >>> pack_get_dc_config_in(GetDcConfigIn(8, 0)).hex()
    '0800'
    """
    loc = _Loc(_CFG_IN, 0, 2)
    _is(request, GetDcConfigIn, loc)
    row = (_uint(request.region_count, 8, loc, 0, "region_count", 0x00),
           _uint(request.start_region, 8, loc, 0, "start_region", 0x01))
    _raise_first([_check_row(_CFG_IN_RULES, row, loc, strict)])
    return bytes(row)


def unpack_get_dc_config_in(buf: Any, *, strict: bool = True) -> GetDcConfigIn:
    """Get DC Configuration input from exactly 2 bytes.

    >>> unpack_get_dc_config_in(b"\\x08\\x02")
    GetDcConfigIn(region_count=8, start_region=2)
    """
    row = _exact_row(_buffer(buf, _CFG_IN), GET_DC_CONFIG_IN_DTYPE, _CFG_IN,
                     "Get DC Configuration input")
    _raise_first([_check_row(_CFG_IN_RULES, row, _Loc(_CFG_IN, 0, 2), strict)])
    return GetDcConfigIn(*row)


def pack_get_dc_extent_list_in(request: GetDcExtentListIn, *, strict: bool = True) -> bytes:
    """The 8-byte Get DC Extent List (4801h) input (no field has a restricted range).

    >>> pack_get_dc_extent_list_in(GetDcExtentListIn(0xFFFFFFFF)).hex()
    'ffffffff00000000'
    """
    loc = _Loc(_LIST_IN, 0, 8)
    _is(request, GetDcExtentListIn, loc)
    row = (_uint(request.count, 32, loc, 0, "count", 0x00),
           _uint(request.start_index, 32, loc, 0, "start_index", 0x04))
    return np.array([row], GET_DC_EXTENT_LIST_IN_DTYPE).tobytes()


def unpack_get_dc_extent_list_in(buf: Any, *, strict: bool = True) -> GetDcExtentListIn:
    """Get DC Extent List input from exactly 8 bytes.

    >>> unpack_get_dc_extent_list_in(bytes.fromhex("1000000020000000"))
    GetDcExtentListIn(count=16, start_index=32)
    """
    row = _exact_row(_buffer(buf, _LIST_IN), GET_DC_EXTENT_LIST_IN_DTYPE, _LIST_IN,
                     "Get DC Extent List input")
    return GetDcExtentListIn(*row)


# ---------------------------------------------------------------------------------------------
# Variable-length payloads
# ---------------------------------------------------------------------------------------------
#
# Unpacking runs in four steps: (1) a buffer shorter than the fixed header is a truncation
# error; (2) the header's own rules and cross-checks (a count over its limit); (3) the buffer
# length against the count field; (4) the entries' rules, vectorised.  Errors of steps 2-4 are
# gathered and the one at the lowest offset is raised.


def _header_row(mv: memoryview, dtype: np.dtype, path: str, what: str) -> tuple:
    """The fixed header of a payload as a tuple, or a truncation error inside it."""
    size, n = dtype.itemsize, len(mv)
    if n < size:
        field, off = _field_at(dtype, n)
        raise _truncated(f"{path}.{field}", off,
                         f"the buffer ends here; {what} needs at least {size} bytes, got {n}",
                         size, n)
    return _view(mv, dtype, 0, 1).tolist()[0]


def _length_error(mv: memoryview, segs: Sequence[_Seg], count_name: str, count_off: int,
                  count: int, what: str) -> Optional[RecordError]:
    """Unless the buffer holds exactly the payload that the count field describes, the error."""
    need = sum(s.dtype.itemsize * (1 if s.count is None else s.count) for s in segs)
    have = len(mv)
    if have < need:
        cut_name, cut_off = _cut(segs, have)
        return _truncated(count_name, count_off,
                          f"a count of {count} makes {what} {need} bytes, but the buffer has "
                          f"{have}: it ends inside {cut_name} at offset {cut_off:#x}", need, have)
    if have > need:
        return RecordError(f"{count_name} at offset {count_off:#x}: a count of {count} makes "
                           f"{what} {need} bytes, but the buffer has {have} "
                           f"({_nbytes(have - need)} left over at offset {need:#x})",
                           count_name, count_off)
    return None


def _unpack_list(mv: memoryview, head_segs: Sequence[_Seg], rec: _Rec, eloc: _Loc, n: int,
                 tail_segs: Sequence[_Seg], count: Tuple[str, int], what: str,
                 errors: List[Optional[RecordError]], strict: bool) -> np.ndarray:
    """Steps 3 and 4 for a payload: check its length, then its ``n`` entries; the entries."""
    segs = [*head_segs, _Seg(eloc, rec.dtype, n), *tail_segs]
    length = _length_error(mv, segs, count[0], count[1], n, what)
    if length is not None:
        _raise_first([*errors, length])
    entries = _view(mv, rec.dtype, eloc.base, n)
    _raise_first([*errors, *_check_array(rec.rules, entries, eloc, strict)])
    return _owned(mv, rec.dtype, eloc.base, n)


def _count(n: int, bits: int, loc: _Loc, field: str, off: int) -> int:
    if n >= 1 << bits:
        raise _error(loc, 0, field, off, f"{n} entries do not fit in an unsigned {bits}-bit count")
    return n


def _as_objects(payload: Any) -> Any:
    """The same payload with its list as a tuple of record objects."""
    rec = _LIST_SPECS[type(payload)]
    value = getattr(payload, payload._list_field)
    if isinstance(value, tuple):
        return payload
    return replace(payload, **{payload._list_field: tuple(map(rec.obj, value.tolist()))})


# --- Get DC Configuration output --------------------------------------------------------------

_CFG_OUT = "get_dc_config_out"
_CFG_OUT_WHAT = "the Get DC Configuration output"
_CFG_OUT_COUNTS = ("supported_extents", "available_extents", "supported_tags", "available_tags")


def _regions_returned_error(n: int, available: int, loc: _Loc) -> Optional[RecordError]:
    if n <= available:
        return None
    return _error(loc, 0, "regions_returned", 0x01,
                  f"{n} regions returned but only {available} available")


def pack_get_dc_config_out(out: GetDcConfigOut, *, strict: bool = True) -> bytes:
    """Get DC Configuration (4800h) output: header, region records, the four counts.

    Refuses ``available_regions`` over 8 and more regions than ``available_regions``.

    >>> out = GetDcConfigOut(2, [DcRegion(0, 256 << 20, 256 << 20, 64)], 512, 500)
    >>> raw = pack_get_dc_config_out(out)
    >>> raw[:8].hex(), raw[-16:].hex()
    ('0201000000000000', '00020000f40100000000000000000000')
    """
    hloc = _Loc(_CFG_OUT, 0, 8)
    _is(out, GetDcConfigOut, hloc)
    available = _uint(out.available_regions, 8, hloc, 0, "available_regions", 0x00)
    rloc = _Loc(_CFG_OUT + ".regions[{i}]", 8, 40)
    regions = _as_records_array(_REGION, out.regions, rloc)
    n = len(regions)
    cloc = _Loc(_CFG_OUT, 8 + 40 * n, 16)
    counts = tuple(_uint(getattr(out, name), 32, cloc, 0, name, 4 * k)
                   for k, name in enumerate(_CFG_OUT_COUNTS))
    head = (available, min(n, 0xFF), bytes(6))
    _raise_first([_check_row(_CFG_OUT_RULES, head, hloc, strict),
                  _regions_returned_error(n, available, hloc),
                  *_check_array(_REGION_RULES, regions, rloc, strict)])
    return (np.array([head], GET_DC_CONFIG_OUT_HEADER_DTYPE).tobytes() + regions.tobytes()
            + np.array([counts], GET_DC_CONFIG_OUT_COUNTS_DTYPE).tobytes())


def unpack_get_dc_config_out_array(buf: Any, *, strict: bool = True) -> GetDcConfigOut:
    """Get DC Configuration output with ``regions`` as an array of :data:`REGION_DTYPE`.

    Always refused: fewer than 8 header bytes, ``available_regions`` over 8,
    ``regions_returned`` over ``available_regions``, a length other than
    8 + 40 × regions_returned + 16.  With ``strict``: non-zero reserved bytes, reserved region
    flag bits.

    >>> out = unpack_get_dc_config_out_array(b"\\x01\\x01" + bytes(6) + bytes(40) + bytes(16))
    >>> out.available_regions, out.regions.shape
    (1, (1,))
    """
    mv = _buffer(buf, _CFG_OUT)
    head = _header_row(mv, GET_DC_CONFIG_OUT_HEADER_DTYPE, _CFG_OUT, _CFG_OUT_WHAT)
    available, n = head[0], head[1]
    hloc = _Loc(_CFG_OUT, 0, 8)
    cloc = _Loc(_CFG_OUT, 8 + 40 * n, 16)
    errors = [_check_row(_CFG_OUT_RULES, head, hloc, strict),
              _regions_returned_error(n, available, hloc)]
    regions = _unpack_list(mv, [_Seg(hloc, GET_DC_CONFIG_OUT_HEADER_DTYPE)], _REGION,
                           _Loc(_CFG_OUT + ".regions[{i}]", 8, 40), n,
                           [_Seg(cloc, GET_DC_CONFIG_OUT_COUNTS_DTYPE)],
                           (f"{_CFG_OUT}.regions_returned", 0x01), _CFG_OUT_WHAT, errors, strict)
    counts = _view(mv, GET_DC_CONFIG_OUT_COUNTS_DTYPE, 8 + 40 * n, 1).tolist()[0]
    return GetDcConfigOut(available, regions, *counts)


def unpack_get_dc_config_out(buf: Any, *, strict: bool = True) -> GetDcConfigOut:
    """Get DC Configuration output with ``regions`` as a tuple of :class:`DcRegion`.

    >>> raw = pack_get_dc_config_out(GetDcConfigOut(1, [DcRegion(0, 256 << 20, 1 << 20, 64)]))
    >>> unpack_get_dc_config_out(raw).regions[0].decode_length == 256 << 20
    True
    """
    return _as_objects(unpack_get_dc_config_out_array(buf, strict=strict))


# --- Get DC Extent List output ----------------------------------------------------------------

_LIST_OUT = "get_dc_extent_list_out"
_LIST_OUT_WHAT = "the Get DC Extent List output"


def _returned_error(n: int, total: int, loc: _Loc) -> Optional[RecordError]:
    if n <= total:
        return None
    return _error(loc, 0, "returned", 0x00, f"{n} extents returned but the total is {total}")


def pack_get_dc_extent_list_out(out: GetDcExtentListOut, *, strict: bool = True) -> bytes:
    """Get DC Extent List (4801h) output: 16-byte header, then 40-byte extents.

    Refuses more extents than ``total_extents``.

    >>> out = GetDcExtentListOut(total_extents=1, generation=5, extents=[DcExtent(0, 64)])
    >>> len(pack_get_dc_extent_list_out(out))
    56
    """
    hloc = _Loc(_LIST_OUT, 0, 16)
    _is(out, GetDcExtentListOut, hloc)
    total = _uint(out.total_extents, 32, hloc, 0, "total_extents", 0x04)
    generation = _uint(out.generation, 32, hloc, 0, "generation", 0x08)
    eloc = _Loc(_LIST_OUT + ".extents[{i}]", 16, 40)
    extents = _as_records_array(_EXTENT, out.extents, eloc)
    n = _count(len(extents), 32, hloc, "returned", 0x00)
    _raise_first([_returned_error(n, total, hloc),
                  *_check_array(_EXTENT_RULES, extents, eloc, strict)])
    head = np.array([(n, total, generation, bytes(4))], GET_DC_EXTENT_LIST_OUT_HEADER_DTYPE)
    return head.tobytes() + extents.tobytes()


def unpack_get_dc_extent_list_out_array(buf: Any, *, strict: bool = True) -> GetDcExtentListOut:
    """Get DC Extent List output with ``extents`` as an array of :data:`EXTENT_DTYPE`.

    O(n), no Python loop per extent.  Always refused: a ``returned`` count over ``total`` or
    one that disagrees with the buffer length; with ``strict``, non-zero reserved bytes.

    >>> raw = bytes.fromhex("02000000020000000900000000000000") + bytes(80)
    >>> out = unpack_get_dc_extent_list_out_array(raw)
    >>> out.generation, len(out.extents)
    (9, 2)
    """
    mv = _buffer(buf, _LIST_OUT)
    head = _header_row(mv, GET_DC_EXTENT_LIST_OUT_HEADER_DTYPE, _LIST_OUT, _LIST_OUT_WHAT)
    n, total, generation = head[:3]
    hloc = _Loc(_LIST_OUT, 0, 16)
    errors = [_returned_error(n, total, hloc), _check_row(_LIST_OUT_RULES, head, hloc, strict)]
    extents = _unpack_list(mv, [_Seg(hloc, GET_DC_EXTENT_LIST_OUT_HEADER_DTYPE)], _EXTENT,
                           _Loc(_LIST_OUT + ".extents[{i}]", 16, 40), n, [],
                           (f"{_LIST_OUT}.returned", 0x00), _LIST_OUT_WHAT, errors, strict)
    return GetDcExtentListOut(total, generation, extents)


def unpack_get_dc_extent_list_out(buf: Any, *, strict: bool = True) -> GetDcExtentListOut:
    """Get DC Extent List output with ``extents`` as a tuple of :class:`DcExtent`.

    >>> raw = pack_get_dc_extent_list_out(GetDcExtentListOut(4, 1, [DcExtent(64, 64)]))
    >>> unpack_get_dc_extent_list_out(raw).extents
    (DcExtent(start=64, length=64, tag=UUID('00000000-0000-0000-0000-000000000000'), shared_seq=0),)
    """
    return _as_objects(unpack_get_dc_extent_list_out_array(buf, strict=strict))


# --- Add DC Response / Release DC -------------------------------------------------------------

_ULIST = "updated_extent_list"
_ULIST_WHAT = "the Add DC Response / Release DC payload"


def pack_updated_extent_list(payload: UpdatedExtentList, *, strict: bool = True) -> bytes:
    """An Add DC Response (4802h) or Release DC (4803h) input payload: header + 24-byte extents.

    The count is ``len(payload.extents)``; the More bit is ``payload.more``.  To fit a mailbox
    payload size, use :func:`split_updated_extent_list`.

    >>> pack_updated_extent_list(UpdatedExtentList([], more=False)).hex()
    '0000000000000000'
    """
    hloc = _Loc(_ULIST, 0, 8)
    _is(payload, UpdatedExtentList, hloc)
    more = _flag(payload.more, hloc, 0, "more", 0x04)
    eloc = _Loc(_ULIST + ".extents[{i}]", 8, 24)
    extents = _as_records_array(_UPDATED, payload.extents, eloc)
    n = _count(len(extents), 32, hloc, "count", 0x00)
    _raise_first(_check_array(_UPDATED_RULES, extents, eloc, strict))
    head = np.array([(n, _MORE if more else 0, bytes(3))], UPDATED_EXTENT_LIST_HEADER_DTYPE)
    return head.tobytes() + extents.tobytes()


def unpack_updated_extent_list_array(buf: Any, *, strict: bool = True) -> UpdatedExtentList:
    """An Add DC Response / Release DC payload with ``extents`` as an array of
    :data:`UPDATED_EXTENT_DTYPE`.

    O(n), no Python loop per extent.  Always refused: a count that disagrees with the buffer
    length.  With ``strict``: reserved flag bits, non-zero reserved bytes.

    >>> p = unpack_updated_extent_list_array(bytes.fromhex("0100000001000000") + bytes(24))
    >>> p.more, p.extents.shape
    (True, (1,))
    """
    mv = _buffer(buf, _ULIST)
    head = _header_row(mv, UPDATED_EXTENT_LIST_HEADER_DTYPE, _ULIST, _ULIST_WHAT)
    hloc = _Loc(_ULIST, 0, 8)
    errors = [_check_row(_ULIST_RULES, head, hloc, strict)]
    extents = _unpack_list(mv, [_Seg(hloc, UPDATED_EXTENT_LIST_HEADER_DTYPE)], _UPDATED,
                           _Loc(_ULIST + ".extents[{i}]", 8, 24), head[0], [],
                           (f"{_ULIST}.count", 0x00), _ULIST_WHAT, errors, strict)
    return UpdatedExtentList(extents, more=bool(head[1] & _MORE))


def unpack_updated_extent_list(buf: Any, *, strict: bool = True) -> UpdatedExtentList:
    """An Add DC Response / Release DC payload with ``extents`` as a tuple of :class:`UpdatedExtent`.

    >>> unpack_updated_extent_list(bytes(8))
    UpdatedExtentList(extents=(), more=False)
    """
    return _as_objects(unpack_updated_extent_list_array(buf, strict=strict))


def split_updated_extent_list(extents: Any, payload_size: int, *,
                              strict: bool = True) -> List[bytes]:
    """Split a long Add DC Response / Release DC list over payloads of at most ``payload_size`` bytes.

    As the kernel does (``cxl_send_dc_response``): each payload holds
    ``(payload_size - 8) // 24`` extents, in order; More is set on all but the last; an empty
    list gives one payload with count 0.  ``extents`` is a sequence of :class:`UpdatedExtent`,
    an array of :data:`UPDATED_EXTENT_DTYPE`, or an :class:`UpdatedExtentList` (its ``more``
    is ignored).  O(n) with one Python step per payload, none per extent.

    Raises :class:`~dcdmap.errors.InvalidRangeError` if ``payload_size`` cannot hold one extent.

    >>> parts = split_updated_extent_list([UpdatedExtent(64 * i, 64) for i in range(5)], 64)
    >>> [(len(p), p[4]) for p in parts]
    [(56, 1), (56, 1), (32, 0)]
    """
    if isinstance(extents, UpdatedExtentList):
        extents = extents.extents
    if isinstance(payload_size, bool) or not isinstance(payload_size, (int, np.integer)):
        raise InputTypeError(f"payload_size must be an int, not {type(payload_size).__name__}")
    per = (int(payload_size) - 8) // 24
    if per < 1:
        raise InvalidRangeError(f"a payload of {payload_size} bytes cannot hold one updated "
                                f"extent (8 header bytes + 24 per extent)")
    loc = _Loc(_ULIST + ".extents[{i}]", 8, 24)
    arr = _as_records_array(_UPDATED, extents, loc)
    _raise_first(_check_array(_UPDATED_RULES, arr, loc, strict))
    raw = arr.tobytes()
    n = len(arr)
    chunks = max(1, -(-n // per))
    out = []
    for k in range(chunks):
        lo, hi = k * per, min(n, (k + 1) * per)
        head = np.array([(hi - lo, _MORE if k < chunks - 1 else 0, bytes(3))],
                        UPDATED_EXTENT_LIST_HEADER_DTYPE)
        out.append(head.tobytes() + raw[lo * 24:hi * 24])
    return out


def join_updated_extent_lists(payloads: Iterable[Any], *, strict: bool = True) -> UpdatedExtentList:
    """Join a More chain of Add DC Response / Release DC payloads back into one list.

    Every payload but the last must have More set and the last must not; the result has
    ``more=False`` and ``extents`` as one array.  Errors name the payload by its index
    (``updated_extent_list[2].flags``); their offsets are within that payload.  O(n) with one
    Python step per payload.

    >>> parts = split_updated_extent_list([UpdatedExtent(64 * i, 64) for i in range(5)], 64)
    >>> joined = join_updated_extent_lists(parts)
    >>> joined.extents["start"].tolist(), joined.more
    ([0, 64, 128, 192, 256], False)
    """
    if isinstance(payloads, (bytes, bytearray, memoryview)):
        raise InputTypeError("join_updated_extent_lists takes a sequence of payloads, not one buffer")
    parts = list(payloads)
    if not parts:
        raise RecordError("join_updated_extent_lists: no payloads (a list is at least one payload)")
    arrays = []
    for k, buf in enumerate(parts):
        try:
            p = unpack_updated_extent_list_array(buf, strict=strict)
        except RecordError as e:
            path = f"{_ULIST}[{k}]"
            field = e.field.replace(_ULIST, path, 1) if e.field else path
            message = str(e).replace(_ULIST + ".", path + ".") + f" (offset in payload {k})"
            raise type(e)(message, field, e.offset,
                          *((e.needed, e.got) if isinstance(e, RecordTruncatedError) else ())
                          ) from None
        last = k == len(parts) - 1
        if p.more == last:
            name = f"{_ULIST}[{k}].flags"
            why = ("More is set on the last payload: the list is incomplete" if last else
                   f"More is clear but {len(parts) - 1 - k} more payload(s) follow")
            raise RecordError(f"{name} at offset 0x4: {why}", name, 0x4)
        arrays.append(p.extents.view(np.uint8))
    return UpdatedExtentList(np.concatenate(arrays).view(UPDATED_EXTENT_DTYPE), more=False)


# --- FM-API Initiate DC Add / Release ---------------------------------------------------------

_FM_ADD = "fm_dc_add"
_FM_REL = "fm_dc_release"


def _pack_fm(payload: Any, path: str, dtype: np.dtype, rules: _Rules, byte2: int,
             strict: bool) -> bytes:
    hloc = _Loc(path, 0, 0x20)
    eloc = _Loc(path + ".extents[{i}]", 0x20, 40)
    extents = _as_records_array(_EXTENT, payload.extents, eloc)
    head = (_uint(payload.host_id, 16, hloc, 0, "host_id", 0x00), byte2,
            _uint(payload.region, 8, hloc, 0, "region", 0x03),
            _uint(payload.length, 64, hloc, 0, "length", 0x04),
            _tag_bytes(payload.tag, hloc, 0, "tag", 0x0C),
            _count(len(extents), 32, hloc, "extent_count", 0x1C))
    _raise_first([_check_row(rules, head, hloc, strict),
                  *_check_array(_EXTENT_RULES, extents, eloc, strict)])
    return np.array([head], dtype).tobytes() + extents.tobytes()


def _unpack_fm(buf: Any, path: str, dtype: np.dtype, rules: _Rules, what: str,
               strict: bool) -> Tuple[tuple, np.ndarray]:
    mv = _buffer(buf, path)
    head = _header_row(mv, dtype, path, what)
    hloc = _Loc(path, 0, 0x20)
    extents = _unpack_list(mv, [_Seg(hloc, dtype)], _EXTENT, _Loc(path + ".extents[{i}]", 0x20, 40),
                           head[5], [], (f"{path}.extent_count", 0x1C), what,
                           [_check_row(rules, head, hloc, strict)], strict)
    return head, extents


def pack_fm_dc_add(payload: FmDcAdd, *, strict: bool = True) -> bytes:
    """The FM-API Initiate DC Add (5604h) input: 0x20-byte header, then 40-byte extents.

    With ``strict``, a region over 7 is refused.

    >>> add = FmDcAdd(1, SelectionPolicy.PRESCRIPTIVE, 0, length=0x20_0000)
    >>> pack_fm_dc_add(add)[:12].hex()
    '010002000000200000000000'
    """
    hloc = _Loc(_FM_ADD, 0, 0x20)
    _is(payload, FmDcAdd, hloc)
    policy = _member(payload.selection_policy, SelectionPolicy, hloc, 0, "selection_policy", 0x02)
    return _pack_fm(payload, _FM_ADD, FM_DC_ADD_HEADER_DTYPE, _FM_ADD_RULES, policy, strict)


def unpack_fm_dc_add_array(buf: Any, *, strict: bool = True) -> FmDcAdd:
    """The FM-API Initiate DC Add input with ``extents`` as an array of :data:`EXTENT_DTYPE`.

    Always refused: an unknown selection policy (byte 0x02 read whole: 0..3), an extent count
    that disagrees with the buffer length.  With ``strict``: a region over 7, non-zero
    reserved bytes of the extents.

    >>> add = unpack_fm_dc_add_array(bytes.fromhex("0300010200000000") + bytes(24))
    >>> add.host_id, add.selection_policy.name, add.region, len(add.extents)
    (3, 'CONTIGUOUS', 2, 0)
    """
    head, extents = _unpack_fm(buf, _FM_ADD, FM_DC_ADD_HEADER_DTYPE, _FM_ADD_RULES,
                               "the Initiate DC Add payload", strict)
    host, policy, region, length, tag, _ = head
    return FmDcAdd(host, SelectionPolicy(policy), region, length, _tag(tag), extents)


def unpack_fm_dc_add(buf: Any, *, strict: bool = True) -> FmDcAdd:
    """The FM-API Initiate DC Add input with ``extents`` as a tuple of :class:`DcExtent`.

    >>> add = FmDcAdd(0, SelectionPolicy.FREE, 1, length=1 << 30)
    >>> unpack_fm_dc_add(pack_fm_dc_add(add)) == add
    True
    """
    return _as_objects(unpack_fm_dc_add_array(buf, strict=strict))


def pack_fm_dc_release(payload: FmDcRelease, *, strict: bool = True) -> bytes:
    """The FM-API Initiate DC Release (5605h) input: as Add, byte 0x02 holding the flags.

    >>> rel = FmDcRelease(0, RemovalPolicy.TAG_BASED, 0, sanitize_on_release=True,
    ...                   tag=uuid.UUID(int=1))
    >>> raw = pack_fm_dc_release(rel)
    >>> raw[2], raw[0x0C:0x1C].hex()
    (32, '00000000000000000000000000000001')
    """
    hloc = _Loc(_FM_REL, 0, 0x20)
    _is(payload, FmDcRelease, hloc)
    flags = (_member(payload.removal_policy, RemovalPolicy, hloc, 0, "removal_policy", 0x02)
             | (_FORCED if _flag(payload.forced_removal, hloc, 0, "forced_removal", 0x02) else 0)
             | (_SANITIZE_ON_RELEASE if _flag(payload.sanitize_on_release, hloc, 0,
                                              "sanitize_on_release", 0x02) else 0))
    return _pack_fm(payload, _FM_REL, FM_DC_RELEASE_HEADER_DTYPE, _FM_RELEASE_RULES, flags, strict)


def unpack_fm_dc_release_array(buf: Any, *, strict: bool = True) -> FmDcRelease:
    """The FM-API Initiate DC Release input with ``extents`` as an array of :data:`EXTENT_DTYPE`.

    Always refused: an unknown removal policy (bits 3:0 of byte 0x02: 0..1), an extent count
    that disagrees with the buffer length.  With ``strict``: bits 7:6 of the flags, a region
    over 7, non-zero reserved bytes of the extents.

    >>> rel = unpack_fm_dc_release_array(bytes.fromhex("0000110000000000") + bytes(24))
    >>> rel.removal_policy.name, rel.forced_removal, rel.sanitize_on_release
    ('PRESCRIPTIVE', True, False)
    """
    head, extents = _unpack_fm(buf, _FM_REL, FM_DC_RELEASE_HEADER_DTYPE, _FM_RELEASE_RULES,
                               "the Initiate DC Release payload", strict)
    host, flags, region, length, tag, _ = head
    return FmDcRelease(host, RemovalPolicy(flags & _REMOVAL_MASK), region, length, _tag(tag),
                       extents, bool(flags & _FORCED), bool(flags & _SANITIZE_ON_RELEASE))


def unpack_fm_dc_release(buf: Any, *, strict: bool = True) -> FmDcRelease:
    """The FM-API Initiate DC Release input with ``extents`` as a tuple of :class:`DcExtent`.

    >>> rel = FmDcRelease(2, RemovalPolicy.PRESCRIPTIVE, 0, extents=[DcExtent(0, 64)])
    >>> unpack_fm_dc_release(pack_fm_dc_release(rel)).extents[0].length
    64
    """
    return _as_objects(unpack_fm_dc_release_array(buf, strict=strict))


# ---------------------------------------------------------------------------------------------
# Objects <-> arrays
# ---------------------------------------------------------------------------------------------


def records_to_array(records: Iterable[Any], record_type: type, *,
                     strict: bool = True) -> np.ndarray:
    """An array of the wire dtype of ``record_type`` from record objects (one Python step each).

    ``record_type`` is :class:`DcExtent`, :class:`DcEvent`, :class:`DcRegion` or
    :class:`UpdatedExtent`.  The values are checked as :func:`pack_extent` and friends check
    them; error paths index the records (``dc_event[3].host_id``).

    >>> a = records_to_array([DcExtent(0, 64), DcExtent(64, 64)], DcExtent)
    >>> a["start"].tolist()
    [0, 64]
    """
    rec = _BY_CLASS.get(record_type)  # type: ignore[call-overload]
    if rec is None:
        raise InputTypeError(f"records_to_array: no wire dtype for {record_type!r}")
    loc = _Loc(rec.path + "[{i}]", 0, rec.dtype.itemsize)
    arr = _as_records_array(rec, records, loc)
    _raise_first(_check_array(rec.rules, arr, loc, strict))
    return arr


def array_to_records(array: np.ndarray, *, strict: bool = True) -> List[Any]:
    """Record objects from an array of :data:`EXTENT_DTYPE`, :data:`DC_EVENT_DTYPE`,
    :data:`REGION_DTYPE` or :data:`UPDATED_EXTENT_DTYPE` (one Python step each).

    The array is checked first as its unpack function would check it.

    >>> array_to_records(unpack_updated_extent_array(bytes(24)))
    [UpdatedExtent(start=0, length=0)]
    """
    if not isinstance(array, np.ndarray) or array.dtype not in _BY_DTYPE:
        raise InputTypeError("array_to_records: expected an array of one of the record dtypes")
    rec = _BY_DTYPE[array.dtype]
    loc = _Loc(rec.path + "[{i}]", 0, rec.dtype.itemsize)
    array = _as_records_array(rec, array, loc)
    _raise_first(_check_array(rec.rules, array, loc, strict))
    return list(map(rec.obj, array.tolist()))
