"""dcdmap.cxl.records: every DC wire structure, byte for byte, one record and many.

* Layout: each dtype's fields and offsets against the tables of reference/cxl-dcd.md, written
  out again here by hand.
* Golden vectors: hand-assembled byte strings, field by field, packed and unpacked exactly.
* Hypothesis: object -> bytes -> object, random bytes -> object -> the same bytes, and the same
  for arrays (arrays also keep reserved bytes as they were when strict=False).
* Every error path: truncation at every length, counts that disagree with the buffer,
  reserved bytes and bits, unknown enums, limits, over-long lists, bad types; each error names
  the field and its byte offset.
"""
from __future__ import annotations

import inspect
import pickle
import uuid

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dcdmap
from dcdmap import cxl
from dcdmap.cxl import records as R
from dcdmap.cxl import (
    CAPACITY_MULTIPLIER, DC_EVENT_DTYPE, EXTENT_DTYPE, NULL_UUID, REGION_DTYPE,
    UPDATED_EXTENT_DTYPE, DcEvent, DcEventType, DcExtent, DcRegion, FmDcAdd, FmDcRelease,
    GetDcConfigIn, GetDcConfigOut, GetDcExtentListIn, GetDcExtentListOut, Opcode, RemovalPolicy,
    SelectionPolicy, UpdatedExtent, UpdatedExtentList,
)
from dcdmap.errors import (
    ArrayShapeError, DcdmapError, InputTypeError, InvalidRangeError, RecordError,
    RecordTruncatedError,
)

MiB = 1 << 20
TAG = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")


def h(text: str) -> bytes:
    """Bytes from hex written with spaces and '|' between fields."""
    return bytes.fromhex(text.replace("|", " "))


# ---------------------------------------------------------------------------------------------
# Layout: the reference tables, again by hand
# ---------------------------------------------------------------------------------------------

LAYOUTS = {
    # §1
    "EXTENT_DTYPE": (0x28, [("start", 0x00, 8), ("length", 0x08, 8), ("tag", 0x10, 16),
                            ("shared_seq", 0x20, 2), ("reserved", 0x22, 6)]),
    # §3.2 (record-specific body)
    "DC_EVENT_DTYPE": (0x50, [("event_type", 0x00, 1), ("validity_flags", 0x01, 1),
                              ("host_id", 0x02, 2), ("region_index", 0x04, 1), ("flags", 0x05, 1),
                              ("reserved_06", 0x06, 2), ("extent", 0x08, 40),
                              ("reserved_30", 0x30, 24), ("available_extents", 0x48, 4),
                              ("available_tags", 0x4C, 4)]),
    # §2.1
    "REGION_DTYPE": (0x28, [("base", 0x00, 8), ("decode_length_256mib", 0x08, 8),
                            ("length", 0x10, 8), ("block_size", 0x18, 8),
                            ("dsmad_handle", 0x20, 4), ("flags", 0x24, 1), ("reserved", 0x25, 3)]),
    "GET_DC_CONFIG_IN_DTYPE": (2, [("region_count", 0, 1), ("start_region", 1, 1)]),
    "GET_DC_CONFIG_OUT_HEADER_DTYPE": (8, [("available_regions", 0, 1),
                                           ("regions_returned", 1, 1), ("reserved", 2, 6)]),
    "GET_DC_CONFIG_OUT_COUNTS_DTYPE": (16, [("supported_extents", 0, 4),
                                            ("available_extents", 4, 4),
                                            ("supported_tags", 8, 4), ("available_tags", 12, 4)]),
    # §3.4
    "UPDATED_EXTENT_DTYPE": (24, [("start", 0, 8), ("length", 8, 8), ("reserved", 16, 8)]),
    "UPDATED_EXTENT_LIST_HEADER_DTYPE": (8, [("count", 0, 4), ("flags", 4, 1),
                                             ("reserved", 5, 3)]),
    # §3.5
    "GET_DC_EXTENT_LIST_IN_DTYPE": (8, [("count", 0, 4), ("start_index", 4, 4)]),
    "GET_DC_EXTENT_LIST_OUT_HEADER_DTYPE": (16, [("returned", 0, 4), ("total", 4, 4),
                                                 ("generation", 8, 4), ("reserved", 12, 4)]),
    # §3.6 (packed: length at 0x04)
    "FM_DC_ADD_HEADER_DTYPE": (0x20, [("host_id", 0x00, 2), ("selection_policy", 0x02, 1),
                                      ("region", 0x03, 1), ("length", 0x04, 8),
                                      ("tag", 0x0C, 16), ("extent_count", 0x1C, 4)]),
    "FM_DC_RELEASE_HEADER_DTYPE": (0x20, [("host_id", 0x00, 2), ("flags", 0x02, 1),
                                          ("region", 0x03, 1), ("length", 0x04, 8),
                                          ("tag", 0x0C, 16), ("extent_count", 0x1C, 4)]),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_dtype_layout_matches_reference(name):
    dtype = getattr(cxl, name)
    size, fields = LAYOUTS[name]
    assert dtype.itemsize == size
    assert list(dtype.names) == [f for f, _, _ in fields]
    for field, off, nbytes in fields:
        fdt, got_off = dtype.fields[field][:2]
        assert (got_off, fdt.itemsize) == (off, nbytes), field
        if fdt.kind == "u":
            assert fdt.str[0] in "<|", field           # little-endian (or one byte)


def test_constants_and_enums():
    assert CAPACITY_MULTIPLIER == 256 * MiB
    assert cxl.MAX_REGIONS == 8
    assert NULL_UUID.int == 0
    assert str(cxl.DC_EVENT_LOG_UUID) == "ca95afa7-f183-4018-8c2f-95268e101a2a"
    assert [int(o) for o in Opcode] == [0x4800, 0x4801, 0x4802, 0x4803,
                                        0x5600, 0x5601, 0x5602, 0x5603, 0x5604, 0x5605]
    assert [e.name for e in DcEventType] == [
        "ADD_CAPACITY", "RELEASE_CAPACITY", "FORCED_CAPACITY_RELEASE",
        "REGION_CONFIGURATION_UPDATED", "ADD_CAPACITY_RESPONSE", "CAPACITY_RELEASED"]
    assert [int(e) for e in DcEventType] == list(range(6))
    assert [e.name for e in SelectionPolicy] == ["FREE", "CONTIGUOUS", "PRESCRIPTIVE",
                                                 "ENABLE_SHARED_ACCESS"]
    assert [e.name for e in RemovalPolicy] == ["TAG_BASED", "PRESCRIPTIVE"]


def test_errors_are_builtin_subclasses_and_exported():
    assert issubclass(RecordError, DcdmapError) and issubclass(RecordError, ValueError)
    assert issubclass(RecordTruncatedError, RecordError)
    assert dcdmap.RecordError is RecordError and dcdmap.RecordTruncatedError is RecordTruncatedError
    e = pickle.loads(pickle.dumps(RecordTruncatedError("x", "a.b", 3, 8, 2)))
    assert str(e) == "x"


def test_cxl_package_reexports_every_public_name():
    for name in R.__all__:
        assert getattr(cxl, name) is getattr(R, name)
    assert set(R.__all__) <= set(cxl.__all__)


def test_every_public_callable_has_an_example():
    missing = [name for name in R.__all__
               if callable(getattr(R, name)) and not isinstance(getattr(R, name), np.dtype)
               and ">>>" not in (inspect.getdoc(getattr(R, name)) or "")]
    assert not missing, f"no doctest example in {missing}"


# ---------------------------------------------------------------------------------------------
# Golden vectors, assembled field by field
# ---------------------------------------------------------------------------------------------

EXTENT_HEX = ("00 60 45 23 01 00 00 00 |"            # 0x00 start 0x1_2345_6000
              "00 00 20 00 00 00 00 00 |"            # 0x08 length 2 MiB
              "00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff |"   # 0x10 tag (uuid bytes)
              "02 01 |"                              # 0x20 shared_seq 0x0102
              "00 00 00 00 00 00")                   # 0x22 reserved
EXTENT_OBJ = DcExtent(0x1_2345_6000, 2 * MiB, TAG, 0x0102)

EVENT_HEX = ("00 | 01 | 03 02 | 01 | 01 | 00 00 |"   # type, validity, host 0x0203, region, More
             + EXTENT_HEX + "|"                      # 0x08 extent
             + "00 " * 24 + "|"                      # 0x30 reserved
             "f4 01 00 00 | 10 00 00 00")            # 0x48 available extents 500, tags 16
EVENT_OBJ = DcEvent(DcEventType.ADD_CAPACITY, EXTENT_OBJ, more=True, host_id=0x0203,
                    region_index=1, available_extents=500, available_tags=16, validity_flags=1)

# The kernel mock's partition: DPA 2 GiB, decode/length 512 MiB, block 512 B, DSMAD handle 0xFA.
REGION_HEX = ("00 00 00 80 00 00 00 00 |"            # base 2 GiB
              "02 00 00 00 00 00 00 00 |"            # decode length: 2 units of 256 MiB
              "00 00 00 20 00 00 00 00 |"            # region length 512 MiB
              "00 02 00 00 00 00 00 00 |"            # block size 512
              "fa 00 00 00 | 01 | 00 00 00")         # DSMAD handle, flags (sanitize), reserved
REGION_OBJ = DcRegion(0x8000_0000, 512 * MiB, 512 * MiB, 512, 0xFA, True)

UPDATED_HEX = "00 00 40 00 00 00 00 00 | 00 00 20 00 00 00 00 00 | " + "00 " * 8
UPDATED_OBJ = UpdatedExtent(0x40_0000, 0x20_0000)

CONFIG_OUT_HEX = ("02 | 01 | 00 00 00 00 00 00 |" + REGION_HEX + "|"
                  "00 02 00 00 | fe 01 00 00 | 00 00 00 00 | 00 00 00 00")
CONFIG_OUT_OBJ = GetDcConfigOut(2, (REGION_OBJ,), 512, 510, 0, 0)

LIST_OUT_HEX = ("02 00 00 00 | 05 00 00 00 | 07 00 00 00 | 00 00 00 00 |"
                + EXTENT_HEX + "|" + EXTENT_HEX.replace("00 60 45 23", "00 80 45 23"))
LIST_OUT_OBJ = GetDcExtentListOut(5, 7, (EXTENT_OBJ, DcExtent(0x1_2345_8000, 2 * MiB, TAG, 0x0102)))

ULIST_HEX = "02 00 00 00 | 01 | 00 00 00 |" + UPDATED_HEX + "|" + "00 00 60 00" + " 00" * 4 \
    + "| 40 00 00 00 00 00 00 00 |" + " 00" * 8
ULIST_OBJ = UpdatedExtentList((UPDATED_OBJ, UpdatedExtent(0x60_0000, 0x40)), more=True)

FM_ADD_HEX = ("01 00 | 02 | 00 | 00 00 40 00 00 00 00 00 |"   # host 1, prescriptive, region 0, 4 MiB
              "00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff |"
              "01 00 00 00 |" + EXTENT_HEX)
FM_ADD_OBJ = FmDcAdd(1, SelectionPolicy.PRESCRIPTIVE, 0, 4 * MiB, TAG, (EXTENT_OBJ,))

FM_RELEASE_HEX = ("02 00 | 31 | 03 | 00 00 00 00 00 00 00 00 |"  # prescriptive+forced+sanitize
                  + "00 " * 16 + "| 00 00 00 00")
FM_RELEASE_OBJ = FmDcRelease(2, RemovalPolicy.PRESCRIPTIVE, 3, 0, NULL_UUID, (),
                             forced_removal=True, sanitize_on_release=True)

GOLDEN = [
    ("extent", EXTENT_HEX, EXTENT_OBJ, R.pack_extent, R.unpack_extent),
    ("event", EVENT_HEX, EVENT_OBJ, R.pack_dc_event, R.unpack_dc_event),
    ("region", REGION_HEX, REGION_OBJ, R.pack_region, R.unpack_region),
    ("updated", UPDATED_HEX, UPDATED_OBJ, R.pack_updated_extent, R.unpack_updated_extent),
    ("config_in", "08 | 03", GetDcConfigIn(8, 3), R.pack_get_dc_config_in,
     R.unpack_get_dc_config_in),
    ("config_out", CONFIG_OUT_HEX, CONFIG_OUT_OBJ, R.pack_get_dc_config_out,
     R.unpack_get_dc_config_out),
    ("list_in", "10 00 00 00 | 20 01 00 00", GetDcExtentListIn(16, 0x120),
     R.pack_get_dc_extent_list_in, R.unpack_get_dc_extent_list_in),
    ("list_out", LIST_OUT_HEX, LIST_OUT_OBJ, R.pack_get_dc_extent_list_out,
     R.unpack_get_dc_extent_list_out),
    ("updated_list", ULIST_HEX, ULIST_OBJ, R.pack_updated_extent_list,
     R.unpack_updated_extent_list),
    ("fm_add", FM_ADD_HEX, FM_ADD_OBJ, R.pack_fm_dc_add, R.unpack_fm_dc_add),
    ("fm_release", FM_RELEASE_HEX, FM_RELEASE_OBJ, R.pack_fm_dc_release, R.unpack_fm_dc_release),
]


@pytest.mark.parametrize("name,hexdump,obj,pack,unpack", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_vectors(name, hexdump, obj, pack, unpack):
    raw = h(hexdump)
    assert pack(obj) == raw
    assert unpack(raw) == obj
    for buf in (bytearray(raw), memoryview(raw), np.frombuffer(raw, np.uint8)):
        assert unpack(buf) == obj


def test_golden_sizes():
    assert len(h(EXTENT_HEX)) == 40 and len(h(EVENT_HEX)) == 0x50 and len(h(REGION_HEX)) == 40
    assert len(h(CONFIG_OUT_HEX)) == 8 + 40 + 16 and len(h(LIST_OUT_HEX)) == 16 + 80
    assert len(h(ULIST_HEX)) == 8 + 48 and len(h(FM_ADD_HEX)) == 0x20 + 40


def test_golden_array_forms():
    assert R.unpack_extent_array(h(EXTENT_HEX) * 3).tolist() == \
        [(0x1_2345_6000, 2 * MiB, TAG.bytes, 0x0102, bytes(6))] * 3
    ev = R.unpack_dc_event_array(h(EVENT_HEX) * 2)
    assert ev["host_id"].tolist() == [0x0203] * 2 and ev["extent"]["shared_seq"].tolist() == [258] * 2
    assert R.pack_dc_event_array(ev) == h(EVENT_HEX) * 2
    reg = R.unpack_region_array(h(REGION_HEX))
    assert reg["decode_length_256mib"].tolist() == [2]
    assert R.array_to_records(reg) == [REGION_OBJ]
    for name, hexdump, obj, pack, unpack in GOLDEN:
        array_unpack = getattr(R, unpack.__name__ + "_array", None)
        if array_unpack is not None and not name.startswith(("extent", "event", "region",
                                                                "updated")):
            form = array_unpack(h(hexdump))
            assert form == obj and obj == form
            assert pack(form) == h(hexdump)


def test_uuid_byte_order_is_rfc_big_endian():
    """The tag's 16 bytes are uuid.UUID.bytes (kernel uuid_t/import_uuid), not bytes_le."""
    raw = R.pack_extent(DcExtent(0, 64, cxl.DC_EVENT_LOG_UUID))
    assert raw[0x10:0x20] == bytes.fromhex("ca95afa7f18340188c2f95268e101a2a")


def test_null_tag_is_the_null_uuid():
    assert R.unpack_extent(bytes(40)).tag is NULL_UUID


# ---------------------------------------------------------------------------------------------
# Hypothesis: round trips
# ---------------------------------------------------------------------------------------------

u8, u16, u32, u64 = (st.integers(0, 2 ** b - 1) for b in (8, 16, 32, 64))
tags = st.one_of(st.just(NULL_UUID), st.builds(uuid.UUID, int=st.integers(1, 2 ** 128 - 1)))
extents = st.builds(DcExtent, u64, u64, tags, u16)
events = st.builds(DcEvent, st.sampled_from(DcEventType), extents, st.booleans(), u16,
                   st.integers(0, 7), u32, u32, u8)
regions = st.builds(DcRegion, u64, st.integers(0, 2 ** 36 - 1).map(lambda u: u * CAPACITY_MULTIPLIER),
                    u64, u64, u32, st.booleans())
updated = st.builds(UpdatedExtent, u64, u64)
config_in = st.builds(GetDcConfigIn, st.integers(0, 8), st.integers(0, 7))
list_in = st.builds(GetDcExtentListIn, u32, u32)


@st.composite
def config_out(draw):
    available = draw(st.integers(0, 8))
    regs = draw(st.lists(regions, max_size=available))
    return GetDcConfigOut(available, tuple(regs), draw(u32), draw(u32), draw(u32), draw(u32))


@st.composite
def list_out(draw):
    exts = draw(st.lists(extents, max_size=12))
    return GetDcExtentListOut(draw(st.integers(len(exts), 2 ** 32 - 1)), draw(u32), tuple(exts))


updated_lists = st.builds(UpdatedExtentList, st.lists(updated, max_size=12).map(tuple),
                          st.booleans())
fm_adds = st.builds(FmDcAdd, u16, st.sampled_from(SelectionPolicy), st.integers(0, 7), u64, tags,
                    st.lists(extents, max_size=8).map(tuple))
fm_releases = st.builds(FmDcRelease, u16, st.sampled_from(RemovalPolicy), st.integers(0, 7), u64,
                        tags, st.lists(extents, max_size=8).map(tuple), st.booleans(),
                        st.booleans())

OBJECT_CASES = [
    (extents, R.pack_extent, R.unpack_extent),
    (events, R.pack_dc_event, R.unpack_dc_event),
    (regions, R.pack_region, R.unpack_region),
    (updated, R.pack_updated_extent, R.unpack_updated_extent),
    (config_in, R.pack_get_dc_config_in, R.unpack_get_dc_config_in),
    (list_in, R.pack_get_dc_extent_list_in, R.unpack_get_dc_extent_list_in),
    (config_out(), R.pack_get_dc_config_out, R.unpack_get_dc_config_out),
    (list_out(), R.pack_get_dc_extent_list_out, R.unpack_get_dc_extent_list_out),
    (updated_lists, R.pack_updated_extent_list, R.unpack_updated_extent_list),
    (fm_adds, R.pack_fm_dc_add, R.unpack_fm_dc_add),
    (fm_releases, R.pack_fm_dc_release, R.unpack_fm_dc_release),
]


@pytest.mark.parametrize("strategy,pack,unpack", OBJECT_CASES, ids=[c[1].__name__ for c in OBJECT_CASES])
@given(data=st.data())
def test_object_round_trip(strategy, pack, unpack, data):
    obj = data.draw(strategy)
    raw = pack(obj)
    back = unpack(raw)
    assert back == obj
    assert pack(back) == raw
    assert unpack(raw, strict=False) == obj
    array_unpack = getattr(R, unpack.__name__ + "_array", None)
    if array_unpack is not None and isinstance(obj, R._ListPayload):
        form = array_unpack(raw)
        assert form == obj and pack(form) == raw


# Random bytes made valid: reserved bytes zeroed, enum and limited fields brought in range.
def _sanitize(arr: np.ndarray, dtype: np.dtype, lax: bool = False) -> np.ndarray:
    """Make random records valid; with lax, only what strict=False still refuses."""
    if dtype == DC_EVENT_DTYPE:
        arr["event_type"] %= 6
        arr["region_index"] %= 8        # carried by the object: strict=False keeps 8..255
        if not lax:
            arr["flags"] &= 1
            for f in ("reserved_06", "reserved_30"):
                arr[f] = np.void(bytes(arr.dtype.fields[f][0].itemsize))
            arr["extent"]["reserved"] = np.void(bytes(6))
    elif dtype == REGION_DTYPE:
        arr["decode_length_256mib"] &= np.uint64(2 ** 36 - 1)
        if not lax:
            arr["flags"] &= 1
            arr["reserved"] = np.void(bytes(3))
    elif not lax:
        arr["reserved"] = np.void(bytes(arr.dtype.fields["reserved"][0].itemsize))
    return arr


ARRAY_CASES = [
    (EXTENT_DTYPE, R.pack_extent_array, R.unpack_extent_array, R.pack_extent, R.unpack_extent),
    (DC_EVENT_DTYPE, R.pack_dc_event_array, R.unpack_dc_event_array, R.pack_dc_event,
     R.unpack_dc_event),
    (REGION_DTYPE, R.pack_region_array, R.unpack_region_array, R.pack_region, R.unpack_region),
    (UPDATED_EXTENT_DTYPE, R.pack_updated_extent_array, R.unpack_updated_extent_array,
     R.pack_updated_extent, R.unpack_updated_extent),
]


@pytest.mark.parametrize("dtype,pack_a,unpack_a,pack_1,unpack_1", ARRAY_CASES,
                         ids=[c[1].__name__ for c in ARRAY_CASES])
@given(data=st.data())
def test_random_bytes_round_trip_single_and_batched(dtype, pack_a, unpack_a, pack_1, unpack_1,
                                                    data):
    n = data.draw(st.integers(0, 20))
    noise = data.draw(st.binary(min_size=n * dtype.itemsize, max_size=n * dtype.itemsize))
    lax_arr = _sanitize(np.frombuffer(noise, dtype).copy(), dtype, lax=True)
    valid = _sanitize(lax_arr.copy(), dtype).tobytes()
    # batched, strict: every byte survives
    arr = unpack_a(valid)
    assert arr.dtype == dtype and len(arr) == n
    assert pack_a(arr) == valid
    # batched, lax: arrays are raw wire records, reserved content and all
    raw_lax = lax_arr.tobytes()
    assert pack_a(unpack_a(raw_lax, strict=False), strict=False) == raw_lax
    # single records agree with the batch, and objects drop what strict=False ignores
    objs = R.array_to_records(arr)
    assert b"".join(pack_1(o) for o in objs) == valid
    assert R.records_to_array(objs, type(objs[0]) if objs else DcExtent).tobytes() == \
        (valid if objs else b"")
    size = dtype.itemsize
    for k in range(n):
        assert unpack_1(valid[k * size:(k + 1) * size]) == objs[k]
        assert unpack_1(raw_lax[k * size:(k + 1) * size], strict=False) == objs[k]


@given(exts=st.lists(extents, max_size=30), total_extra=st.integers(0, 5), gen=u32)
def test_extent_list_out_batched_matches_objects(exts, total_extra, gen):
    obj = GetDcExtentListOut(len(exts) + total_extra, gen, tuple(exts))
    raw = R.pack_get_dc_extent_list_out(obj)
    arr_form = R.unpack_get_dc_extent_list_out_array(raw)
    assert arr_form.extents.tobytes() == b"".join(R.pack_extent(e) for e in exts)
    assert R.array_to_records(arr_form.extents) == list(exts)
    assert R.pack_get_dc_extent_list_out(arr_form) == raw


def test_unpacked_arrays_own_their_memory():
    buf = bytearray(h(EXTENT_HEX) * 2)
    arr = R.unpack_extent_array(buf)
    buf[0] = 0xFF
    assert int(arr["start"][0]) == 0x1_2345_6000
    assert arr.flags.writeable and arr.flags.c_contiguous
    out = R.unpack_updated_extent_list_array(bytearray(h(ULIST_HEX)))
    assert out.extents.flags.writeable


def test_array_paths_build_no_record_objects(monkeypatch):
    """Batches run without a Python step per record: the per-record converters never run."""
    def boom(*args):
        raise AssertionError("per-record Python conversion in a batch path")

    for name in ("_EXTENT", "_EVENT", "_REGION", "_UPDATED"):
        monkeypatch.setattr(R, name, getattr(R, name)._replace(row=boom, obj=boom))
    n = 1000
    ext = np.zeros(n, EXTENT_DTYPE)
    ext["start"] = np.arange(n) * 64
    ext["length"] = 64
    assert len(R.unpack_extent_array(R.pack_extent_array(ext))) == n
    ev = np.zeros(n, DC_EVENT_DTYPE)
    ev["extent"] = ext
    assert len(R.unpack_dc_event_array(R.pack_dc_event_array(ev))) == n
    upd = np.zeros(n, UPDATED_EXTENT_DTYPE)
    parts = R.split_updated_extent_list(upd, 4096)
    assert len(R.join_updated_extent_lists(parts).extents) == n
    out = GetDcExtentListOut(n, 1, ext)
    assert len(R.unpack_get_dc_extent_list_out_array(R.pack_get_dc_extent_list_out(out)).extents) == n
    add = FmDcAdd(0, SelectionPolicy.PRESCRIPTIVE, 0, extents=ext)
    assert len(R.unpack_fm_dc_add_array(R.pack_fm_dc_add(add)).extents) == n


# ---------------------------------------------------------------------------------------------
# Payload equality and forms
# ---------------------------------------------------------------------------------------------


def test_payload_forms_compare_equal_and_lists_become_tuples():
    a = UpdatedExtentList([UPDATED_OBJ], more=True)
    assert a.extents == (UPDATED_OBJ,)
    b = R.unpack_updated_extent_list_array(R.pack_updated_extent_list(a))
    assert isinstance(b.extents, np.ndarray)
    assert a == b and b == a
    assert a != UpdatedExtentList([UPDATED_OBJ], more=False)
    assert a != UpdatedExtentList([UPDATED_OBJ, UPDATED_OBJ], more=True)
    assert a != UpdatedExtentList([UpdatedExtent(-1, 0)], more=True)   # unpackable: not equal
    assert (a == "x") is False
    with pytest.raises(TypeError):
        hash(a)


# ---------------------------------------------------------------------------------------------
# Errors: truncation at every length
# ---------------------------------------------------------------------------------------------

FIXED = [
    ("extent", EXTENT_DTYPE, R.unpack_extent, h(EXTENT_HEX)),
    ("dc_event", DC_EVENT_DTYPE, R.unpack_dc_event, h(EVENT_HEX)),
    ("region", REGION_DTYPE, R.unpack_region, h(REGION_HEX)),
    ("updated_extent", UPDATED_EXTENT_DTYPE, R.unpack_updated_extent, h(UPDATED_HEX)),
    ("get_dc_config_in", cxl.GET_DC_CONFIG_IN_DTYPE, R.unpack_get_dc_config_in, h("08 00")),
    ("get_dc_extent_list_in", cxl.GET_DC_EXTENT_LIST_IN_DTYPE, R.unpack_get_dc_extent_list_in,
     bytes(8)),
]


def _field_covering(dtype, at, prefix="", base=0):
    for name in dtype.names:
        fdt, off = dtype.fields[name][:2]
        if off <= at < off + fdt.itemsize:
            if fdt.names:
                return _field_covering(fdt, at - off, f"{prefix}{name}.", base + off)
            return f"{prefix}{name}", base + off
    raise AssertionError


@pytest.mark.parametrize("path,dtype,unpack,raw", FIXED, ids=[f[0] for f in FIXED])
def test_fixed_record_truncated_at_every_length(path, dtype, unpack, raw):
    for cut in range(len(raw)):
        with pytest.raises(RecordTruncatedError) as info:
            unpack(raw[:cut])
        e = info.value
        field, off = _field_covering(dtype, cut)
        assert (e.field, e.offset, e.needed, e.got) == (f"{path}.{field}", off, len(raw), cut)
        assert f"{path}.{field} at offset {off:#x}" in str(e)
        assert f"needs {len(raw)} bytes, got {cut}" in str(e)
    with pytest.raises(RecordError, match="1 byte past the end") as info:
        unpack(raw + b"\0")
    assert not isinstance(info.value, RecordTruncatedError)
    assert (info.value.field, info.value.offset) == (path, len(raw))


@pytest.mark.parametrize("dtype,pack_a,unpack_a,pack_1,unpack_1", ARRAY_CASES,
                         ids=[c[1].__name__ for c in ARRAY_CASES])
def test_record_array_truncated_at_every_length(dtype, pack_a, unpack_a, pack_1, unpack_1):
    size = dtype.itemsize
    raw = bytes(3 * size)
    path = R._BY_DTYPE[dtype].path
    for cut in range(len(raw) + 1):
        if cut % size == 0:
            assert len(unpack_a(raw[:cut])) == cut // size
            continue
        with pytest.raises(RecordTruncatedError) as info:
            unpack_a(raw[:cut])
        k, rem = divmod(cut, size)
        field, off = _field_covering(dtype, rem)
        e = info.value
        assert (e.field, e.offset, e.needed, e.got) == (f"{path}[{k}].{field}", k * size + off,
                                                        (k + 1) * size, cut)


def _payload_samples():
    """(name, count field, count offset, header size, raw bytes, unpack functions)."""
    return [
        ("get_dc_config_out", "regions_returned", 0x01, 8, h(CONFIG_OUT_HEX),
         R.GET_DC_CONFIG_OUT_HEADER_DTYPE,
         (R.unpack_get_dc_config_out, R.unpack_get_dc_config_out_array)),
        ("get_dc_extent_list_out", "returned", 0x00, 16, h(LIST_OUT_HEX),
         R.GET_DC_EXTENT_LIST_OUT_HEADER_DTYPE,
         (R.unpack_get_dc_extent_list_out, R.unpack_get_dc_extent_list_out_array)),
        ("updated_extent_list", "count", 0x00, 8, h(ULIST_HEX), R.UPDATED_EXTENT_LIST_HEADER_DTYPE,
         (R.unpack_updated_extent_list, R.unpack_updated_extent_list_array)),
        ("fm_dc_add", "extent_count", 0x1C, 0x20, h(FM_ADD_HEX), R.FM_DC_ADD_HEADER_DTYPE,
         (R.unpack_fm_dc_add, R.unpack_fm_dc_add_array)),
        ("fm_dc_release", "extent_count", 0x1C, 0x20,
         R.pack_fm_dc_release(replace_extents(FM_RELEASE_OBJ, (EXTENT_OBJ, EXTENT_OBJ))),
         R.FM_DC_RELEASE_HEADER_DTYPE, (R.unpack_fm_dc_release, R.unpack_fm_dc_release_array)),
    ]


def replace_extents(obj, exts):
    import dataclasses
    return dataclasses.replace(obj, extents=exts)


PAYLOADS = _payload_samples()


@pytest.mark.parametrize("path,count,count_off,head,raw,hdtype,unpacks", PAYLOADS,
                         ids=[p[0] for p in PAYLOADS])
def test_payload_truncated_at_every_length(path, count, count_off, head, raw, hdtype, unpacks):
    for unpack in unpacks:
        for cut in range(len(raw)):
            with pytest.raises(RecordTruncatedError) as info:
                unpack(raw[:cut])
            e = info.value
            if cut < head:
                field, off = _field_covering(hdtype, cut)
                assert (e.field, e.offset, e.needed, e.got) == (f"{path}.{field}", off, head, cut)
            else:
                assert (e.field, e.offset, e.needed, e.got) == (f"{path}.{count}", count_off,
                                                                len(raw), cut)
                assert f"it ends inside {path}." in str(e)
            assert f"at offset {e.offset:#x}" in str(e)
        with pytest.raises(RecordError, match="1 byte left over") as info:
            unpack(raw + b"\0")
        assert (info.value.field, info.value.offset) == (f"{path}.{count}", count_off)


@pytest.mark.parametrize("path,count,count_off,head,raw,hdtype,unpacks", PAYLOADS,
                         ids=[p[0] for p in PAYLOADS])
def test_payload_count_disagrees_with_length(path, count, count_off, head, raw, hdtype, unpacks):
    width = hdtype.fields[count][0].itemsize
    n = int.from_bytes(raw[count_off:count_off + width], "little")
    for delta in (+1, -1, +7):
        bad = bytearray(raw)
        bad[count_off:count_off + width] = (n + delta).to_bytes(width, "little")
        if path == "get_dc_config_out":
            bad[0] = 8               # keep regions_returned within available_regions
        if path == "get_dc_extent_list_out":
            bad[4:8] = b"\xff" * 4   # and returned within total
        expected = RecordTruncatedError if delta > 0 else RecordError
        with pytest.raises(expected) as info:
            unpacks[1](bytes(bad))
        assert (info.value.field, info.value.offset) == (f"{path}.{count}", count_off)
        assert f"a count of {n + delta} makes" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Errors: reserved bytes and bits, enums, limits
# ---------------------------------------------------------------------------------------------

# (unpack, valid bytes, field path, byte offset, value to write there)
RESERVED = [
    (R.unpack_extent, EXTENT_HEX, "extent.reserved", 0x22, 6),
    (R.unpack_dc_event, EVENT_HEX, "dc_event.reserved_06", 0x06, 2),
    (R.unpack_dc_event, EVENT_HEX, "dc_event.extent.reserved", 0x2A, 6),
    (R.unpack_dc_event, EVENT_HEX, "dc_event.reserved_30", 0x30, 24),
    (R.unpack_region, REGION_HEX, "region.reserved", 0x25, 3),
    (R.unpack_updated_extent, UPDATED_HEX, "updated_extent.reserved", 0x10, 8),
    (R.unpack_get_dc_config_out, CONFIG_OUT_HEX, "get_dc_config_out.reserved", 0x02, 6),
    (R.unpack_get_dc_config_out, CONFIG_OUT_HEX, "get_dc_config_out.regions[0].reserved",
     8 + 0x25, 3),
    (R.unpack_get_dc_extent_list_out, LIST_OUT_HEX, "get_dc_extent_list_out.reserved", 0x0C, 4),
    (R.unpack_get_dc_extent_list_out, LIST_OUT_HEX,
     "get_dc_extent_list_out.extents[1].reserved", 16 + 40 + 0x22, 6),
    (R.unpack_updated_extent_list, ULIST_HEX, "updated_extent_list.reserved", 0x05, 3),
    (R.unpack_updated_extent_list, ULIST_HEX, "updated_extent_list.extents[1].reserved",
     8 + 24 + 0x10, 8),
    (R.unpack_fm_dc_add, FM_ADD_HEX, "fm_dc_add.extents[0].reserved", 0x20 + 0x22, 6),
]


@pytest.mark.parametrize("unpack,hexdump,field,off,size", RESERVED, ids=[r[2] for r in RESERVED])
def test_reserved_bytes_strict_and_lax(unpack, hexdump, field, off, size):
    raw = h(hexdump)
    good = unpack(raw)
    for k in range(size):
        bad = bytearray(raw)
        bad[off + k] = 0x5A
        with pytest.raises(RecordError) as info:
            unpack(bytes(bad))
        e = info.value
        # the error names the whole reserved field, at the field's offset
        assert (e.field, e.offset) == (field, off)
        assert f"{field} at offset {off:#x}: reserved bytes must be zero" in str(e)
        assert "strict=False" in str(e)
        assert unpack(bytes(bad), strict=False) == good


# (unpack, valid bytes, field path, byte offset, defined bits)
FLAG_BITS = [
    (R.unpack_dc_event, EVENT_HEX, "dc_event.flags", 0x05, 0x01),
    (R.unpack_region, REGION_HEX, "region.flags", 0x24, 0x01),
    (R.unpack_updated_extent_list, ULIST_HEX, "updated_extent_list.flags", 0x04, 0x01),
    (R.unpack_get_dc_config_out, CONFIG_OUT_HEX, "get_dc_config_out.regions[0].flags",
     8 + 0x24, 0x01),
    (R.unpack_fm_dc_release, FM_RELEASE_HEX, "fm_dc_release.flags", 0x02, 0x3F),
]


@pytest.mark.parametrize("unpack,hexdump,field,off,defined", FLAG_BITS, ids=[f[2] for f in FLAG_BITS])
def test_reserved_flag_bits(unpack, hexdump, field, off, defined):
    raw = h(hexdump)
    good = unpack(raw)
    for bit in range(8):
        if defined & (1 << bit):
            continue
        bad = bytearray(raw)
        bad[off] |= 1 << bit
        with pytest.raises(RecordError, match="reserved bits") as info:
            unpack(bytes(bad))
        assert (info.value.field, info.value.offset) == (field, off)
        assert f"{1 << bit:#04x}" in str(info.value)
        assert unpack(bytes(bad), strict=False) == good


@pytest.mark.parametrize("unpack,hexdump,field,off,known,mask", [
    (R.unpack_dc_event, EVENT_HEX, "dc_event.event_type", 0x00, 6, 0xFF),
    (R.unpack_fm_dc_add, FM_ADD_HEX, "fm_dc_add.selection_policy", 0x02, 4, 0xFF),
    (R.unpack_fm_dc_release, FM_RELEASE_HEX, "fm_dc_release.flags", 0x02, 2, 0x0F),
])
def test_unknown_enum_values_always_refused(unpack, hexdump, field, off, known, mask):
    raw = h(hexdump)
    for value in range(known, mask + 1):
        bad = bytearray(raw)
        bad[off] = (bad[off] & ~mask & 0xFF) | value
        for strict in (True, False):
            with pytest.raises(RecordError, match=f"unknown .* value {value} ") as info:
                unpack(bytes(bad), strict=strict)
            assert (info.value.field, info.value.offset) == (field, off)


def test_unknown_enum_values_refused_on_pack():
    with pytest.raises(RecordError, match="unknown DcEventType value 6") as info:
        R.pack_dc_event(DcEvent(6, EXTENT_OBJ))
    assert (info.value.field, info.value.offset) == ("dc_event.event_type", 0)
    with pytest.raises(RecordError, match="unknown SelectionPolicy value 4"):
        R.pack_fm_dc_add(FmDcAdd(0, 4, 0))
    with pytest.raises(RecordError, match="unknown RemovalPolicy value 2") as info:
        R.pack_fm_dc_release(FmDcRelease(0, 2, 0))
    assert info.value.offset == 2
    ev = np.zeros(2, DC_EVENT_DTYPE)
    ev["event_type"][1] = 9
    for strict in (True, False):
        with pytest.raises(RecordError, match="unknown DcEventType value 9") as info:
            R.pack_dc_event_array(ev, strict=strict)
        assert (info.value.field, info.value.offset) == ("dc_event[1].event_type", 0x50)


def test_plain_ints_are_accepted_for_enums():
    assert R.pack_dc_event(DcEvent(1, EXTENT_OBJ)) == \
        R.pack_dc_event(DcEvent(DcEventType.RELEASE_CAPACITY, EXTENT_OBJ))
    assert R.unpack_dc_event(R.pack_dc_event(DcEvent(1, EXTENT_OBJ))).event_type is \
        DcEventType.RELEASE_CAPACITY


@pytest.mark.parametrize("pack,unpack,obj,field,off", [
    (R.pack_dc_event, R.unpack_dc_event, DcEvent(0, EXTENT_OBJ, region_index=8),
     "dc_event.region_index", 0x04),
    (R.pack_fm_dc_add, R.unpack_fm_dc_add, FmDcAdd(0, SelectionPolicy.FREE, 8), "fm_dc_add.region",
     0x03),
    (R.pack_fm_dc_release, R.unpack_fm_dc_release, FmDcRelease(0, RemovalPolicy.TAG_BASED, 200),
     "fm_dc_release.region", 0x03),
    (R.pack_get_dc_config_in, R.unpack_get_dc_config_in, GetDcConfigIn(9, 0),
     "get_dc_config_in.region_count", 0x00),
    (R.pack_get_dc_config_in, R.unpack_get_dc_config_in, GetDcConfigIn(8, 8),
     "get_dc_config_in.start_region", 0x01),
])
def test_region_limits_strict_and_lax(pack, unpack, obj, field, off):
    with pytest.raises(RecordError, match="is over") as info:
        pack(obj)
    assert (info.value.field, info.value.offset) == (field, off)
    raw = pack(obj, strict=False)
    with pytest.raises(RecordError, match="is over") as info:
        unpack(raw)
    assert (info.value.field, info.value.offset) == (field, off)
    assert unpack(raw, strict=False) == obj


def test_region_counts_over_8_always_refused():
    raw = bytearray(h(CONFIG_OUT_HEX))
    raw[0] = 9
    for strict in (True, False):
        with pytest.raises(RecordError, match="9 is over 8") as info:
            R.unpack_get_dc_config_out(bytes(raw), strict=strict)
        assert (info.value.field, info.value.offset) == ("get_dc_config_out.available_regions", 0)
    raw[0] = 0                                     # 1 region returned of 0 available
    with pytest.raises(RecordError, match="1 regions returned but only 0 available") as info:
        R.unpack_get_dc_config_out(bytes(raw), strict=False)
    assert (info.value.field, info.value.offset) == ("get_dc_config_out.regions_returned", 1)
    with pytest.raises(RecordError, match="9 is over 8"):
        R.pack_get_dc_config_out(GetDcConfigOut(9, (REGION_OBJ,) * 9), strict=False)
    with pytest.raises(RecordError, match="9 regions returned but only 8") as info:
        R.pack_get_dc_config_out(GetDcConfigOut(8, (REGION_OBJ,) * 9))
    assert info.value.offset == 1
    eight = GetDcConfigOut(8, (REGION_OBJ,) * 8)
    assert R.unpack_get_dc_config_out(R.pack_get_dc_config_out(eight)) == eight


def test_extent_list_returned_over_total():
    with pytest.raises(RecordError, match="2 extents returned but the total is 1") as info:
        R.pack_get_dc_extent_list_out(GetDcExtentListOut(1, 0, (EXTENT_OBJ,) * 2))
    assert (info.value.field, info.value.offset) == ("get_dc_extent_list_out.returned", 0)
    raw = bytearray(h(LIST_OUT_HEX))
    raw[4] = 1
    with pytest.raises(RecordError, match="2 extents returned but the total is 1"):
        R.unpack_get_dc_extent_list_out(bytes(raw), strict=False)


def test_decode_length_in_256mib_units():
    with pytest.raises(RecordError, match="not a multiple of 256 MiB") as info:
        R.pack_region(DcRegion(0, 256 * MiB + 64, 64, 64))
    assert (info.value.field, info.value.offset) == ("region.decode_length", 0x08)
    with pytest.raises(RecordError) as info:       # 2**64 bytes does not fit the u64 field
        R.pack_region(DcRegion(0, 1 << 64, 64, 64))
    assert info.value.field == "region.decode_length"
    top = DcRegion(0, (2 ** 36 - 1) * CAPACITY_MULTIPLIER, 0, 0)
    assert R.unpack_region(R.pack_region(top)) == top
    raw = bytearray(R.pack_region(top))
    raw[0x08:0x10] = (2 ** 36).to_bytes(8, "little")   # decodes to 2**64 bytes
    for strict in (True, False):
        with pytest.raises(RecordError, match="2\\*\\*64 bytes or more") as info:
            R.unpack_region(bytes(raw), strict=strict)
        assert (info.value.field, info.value.offset) == ("region.decode_length_256mib", 0x08)


def test_validity_flags_carried_raw():
    for value in (0, 1, 0x80, 0xFF):
        ev = DcEvent(DcEventType.ADD_CAPACITY, EXTENT_OBJ, validity_flags=value)
        raw = R.pack_dc_event(ev)
        assert raw[1] == value and R.unpack_dc_event(raw) == ev


def test_lowest_offset_error_wins():
    raw = bytearray(h(EVENT_HEX))
    raw[0x31] = 1                     # reserved_30
    raw[0x2A] = 1                     # extent.reserved
    raw[0x05] = 0x03                  # flags: reserved bit 1
    with pytest.raises(RecordError) as info:
        R.unpack_dc_event(bytes(raw))
    assert info.value.field == "dc_event.flags"
    raw[0x00] = 7                     # unknown type: the lowest offset
    with pytest.raises(RecordError, match="unknown DcEventType"):
        R.unpack_dc_event(bytes(raw))
    # In a batch the offset is absolute: record 3's flags beat record 5's type.
    ev = np.zeros(6, DC_EVENT_DTYPE)
    ev["flags"][3] = 0x80
    ev["event_type"][5] = 6
    with pytest.raises(RecordError) as info:
        R.pack_dc_event_array(ev)
    assert (info.value.field, info.value.offset) == ("dc_event[3].flags", 3 * 0x50 + 5)
    # Header reserved bytes and a length error: the count at offset 0 is named.
    bad = bytearray(h(ULIST_HEX))[:-1]
    bad[5] = 1
    with pytest.raises(RecordTruncatedError) as info:
        R.unpack_updated_extent_list(bytes(bad))
    assert info.value.field == "updated_extent_list.count"


def test_batch_errors_name_the_record():
    arr = np.zeros(5, EXTENT_DTYPE)
    arr["reserved"][3] = np.void(b"\0\0\0\0\0\x01")
    with pytest.raises(RecordError) as info:
        R.pack_extent_array(arr)
    assert (info.value.field, info.value.offset) == ("extent[3].reserved", 3 * 40 + 0x22)
    assert R.unpack_extent_array(R.pack_extent_array(arr, strict=False), strict=False)[3] == arr[3]
    out = GetDcExtentListOut(5, 0, arr)
    with pytest.raises(RecordError) as info:
        R.pack_get_dc_extent_list_out(out)
    assert (info.value.field, info.value.offset) == ("get_dc_extent_list_out.extents[3].reserved",
                                                     16 + 3 * 40 + 0x22)
    objs = [DcExtent(0, 64)] * 3 + [DcExtent(0, 1 << 64)]
    with pytest.raises(RecordError) as info:
        R.records_to_array(objs, DcExtent)
    assert (info.value.field, info.value.offset) == ("extent[3].length", 3 * 40 + 8)


# ---------------------------------------------------------------------------------------------
# Errors: values that do not fit, wrong types, over-long lists
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pack,obj,field,off", [
    (R.pack_extent, DcExtent(-1, 0), "extent.start", 0x00),
    (R.pack_extent, DcExtent(0, 1 << 64), "extent.length", 0x08),
    (R.pack_extent, DcExtent(0, 0, NULL_UUID, 1 << 16), "extent.shared_seq", 0x20),
    (R.pack_dc_event, DcEvent(0, EXTENT_OBJ, host_id=1 << 16), "dc_event.host_id", 0x02),
    (R.pack_dc_event, DcEvent(0, EXTENT_OBJ, validity_flags=256), "dc_event.validity_flags", 0x01),
    (R.pack_dc_event, DcEvent(0, EXTENT_OBJ, available_tags=1 << 32), "dc_event.available_tags",
     0x4C),
    (R.pack_dc_event, DcEvent(0, DcExtent(0, -5)), "dc_event.extent.length", 0x10),
    (R.pack_region, DcRegion(0, 0, 0, 0, dsmad_handle=1 << 32), "region.dsmad_handle", 0x20),
    (R.pack_get_dc_extent_list_in, GetDcExtentListIn(1 << 32), "get_dc_extent_list_in.count", 0),
    (R.pack_get_dc_config_out, GetDcConfigOut(1, (), supported_tags=-1),
     "get_dc_config_out.supported_tags", 8 + 8),
    (R.pack_get_dc_extent_list_out, GetDcExtentListOut(0, 1 << 32),
     "get_dc_extent_list_out.generation", 0x08),
    (R.pack_updated_extent_list, UpdatedExtentList([UPDATED_OBJ, UpdatedExtent(0, -1)]),
     "updated_extent_list.extents[1].length", 8 + 24 + 8),
    (R.pack_fm_dc_add, FmDcAdd(1 << 16, 0, 0), "fm_dc_add.host_id", 0),
    (R.pack_fm_dc_add, FmDcAdd(0, 0, 0, length=-1), "fm_dc_add.length", 4),
    (R.pack_fm_dc_release, FmDcRelease(0, 0, 0, extents=[EXTENT_OBJ, DcExtent(0, 0, NULL_UUID, -1)]),
     "fm_dc_release.extents[1].shared_seq", 0x20 + 40 + 0x20),
])
def test_values_that_do_not_fit(pack, obj, field, off):
    with pytest.raises(RecordError, match="does not fit") as info:
        pack(obj)
    assert (info.value.field, info.value.offset) == (field, off)
    assert f"{field} at offset {off:#x}" in str(info.value)


@pytest.mark.parametrize("call", [
    lambda: R.pack_extent(DcExtent(0, 64, tag=TAG.bytes)),
    lambda: R.pack_extent(DcExtent(0, 64, tag=None)),
    lambda: R.pack_extent(DcExtent(1.0, 64)),
    lambda: R.pack_extent(DcExtent(True, 64)),
    lambda: R.pack_extent(UPDATED_OBJ),
    lambda: R.pack_dc_event(DcEvent(0, EXTENT_OBJ, more=2)),
    lambda: R.pack_dc_event(DcEvent(0, UPDATED_OBJ)),
    lambda: R.pack_dc_event(DcEvent("ADD", EXTENT_OBJ)),
    lambda: R.pack_region(DcRegion(0, 0, 0, 0, sanitize_on_release="yes")),
    lambda: R.unpack_extent("not bytes"),
    lambda: R.unpack_extent(12),
    lambda: R.pack_extent_array([EXTENT_OBJ]),
    lambda: R.pack_extent_array(np.zeros(2, UPDATED_EXTENT_DTYPE)),
    lambda: R.pack_get_dc_extent_list_out(GetDcExtentListOut(1, 0, "abc")),
    lambda: R.pack_get_dc_extent_list_out(GetDcExtentListOut(1, 0, 5)),
    lambda: R.pack_updated_extent_list(UpdatedExtentList([EXTENT_OBJ])),
    lambda: R.pack_updated_extent_list(ULIST_OBJ.extents),
    lambda: R.records_to_array([EXTENT_OBJ], dict),
    lambda: R.array_to_records(np.zeros(2, np.uint64)),
    lambda: R.split_updated_extent_list([UPDATED_OBJ], 64.0),
    lambda: R.join_updated_extent_lists(h(ULIST_HEX)),
])
def test_wrong_types(call):
    with pytest.raises(InputTypeError):
        call()


def test_array_shape():
    with pytest.raises(ArrayShapeError):
        R.pack_extent_array(np.zeros((2, 2), EXTENT_DTYPE))
    with pytest.raises(ArrayShapeError):
        R.pack_fm_dc_add(FmDcAdd(0, 0, 0, extents=np.zeros((1, 1), EXTENT_DTYPE)))
    # non-contiguous input is fine: it is copied
    arr = np.zeros(6, EXTENT_DTYPE)
    arr["start"] = np.arange(6)
    assert R.unpack_extent_array(R.pack_extent_array(arr[::2]))["start"].tolist() == [0, 2, 4]


def test_decode_length_array_and_object_forms_agree():
    arr = R.records_to_array([REGION_OBJ], DcRegion)
    assert arr["decode_length_256mib"].tolist() == [2]
    out = GetDcConfigOut(1, arr)
    assert out == GetDcConfigOut(1, (REGION_OBJ,))
    assert R.pack_get_dc_config_out(out) == R.pack_get_dc_config_out(GetDcConfigOut(1, [REGION_OBJ]))


# ---------------------------------------------------------------------------------------------
# Split and join (More chains of Add DC Response / Release DC)
# ---------------------------------------------------------------------------------------------


@given(n=st.integers(0, 200), size=st.integers(32, 2048), as_array=st.booleans())
def test_split_join_round_trip(n, size, as_array):
    arr = np.zeros(n, UPDATED_EXTENT_DTYPE)
    arr["start"] = np.arange(n, dtype=np.uint64) * 0x20_0000
    arr["length"] = 0x20_0000
    source = arr if as_array else R.array_to_records(arr)
    parts = R.split_updated_extent_list(source, size)
    per = (size - 8) // 24
    assert len(parts) == max(1, -(-n // per))
    for k, part in enumerate(parts):
        p = R.unpack_updated_extent_list_array(part)
        last = k == len(parts) - 1
        assert len(part) <= size
        assert p.more == (not last)
        assert len(p.extents) == (per if not last else n - per * (len(parts) - 1))
    joined = R.join_updated_extent_lists(parts)
    assert joined.more is False and joined.extents.tobytes() == arr.tobytes()
    assert joined == UpdatedExtentList(R.array_to_records(arr))


def test_split_edges():
    assert R.split_updated_extent_list([], 256) == [bytes(8)]
    three = [UpdatedExtent(i, 1) for i in range(3)]
    parts = R.split_updated_extent_list(three, 8 + 3 * 24)       # exactly full: no empty tail
    assert len(parts) == 1 and parts[0][4] == 0
    assert R.split_updated_extent_list(UpdatedExtentList(three, more=True), 1 << 20) == \
        [R.pack_updated_extent_list(UpdatedExtentList(three))]
    with pytest.raises(InvalidRangeError):
        R.split_updated_extent_list(three, 31)
    bad = R.records_to_array(three, UpdatedExtent)
    bad["reserved"][2] = np.void(b"\1" + bytes(7))
    with pytest.raises(RecordError, match="extents\\[2\\].reserved"):
        R.split_updated_extent_list(bad, 256)


def test_join_errors():
    parts = R.split_updated_extent_list([UpdatedExtent(64 * i, 64) for i in range(5)], 64)
    with pytest.raises(RecordError, match="More is set on the last payload") as info:
        R.join_updated_extent_lists(parts[:2])
    assert (info.value.field, info.value.offset) == ("updated_extent_list[1].flags", 4)
    with pytest.raises(RecordError, match="More is clear but 1 more payload") as info:
        R.join_updated_extent_lists([parts[2], parts[2]])
    assert info.value.field == "updated_extent_list[0].flags"
    with pytest.raises(RecordTruncatedError) as info:
        R.join_updated_extent_lists([parts[0], parts[1][:-3], parts[2]])
    e = info.value
    assert (e.field, e.offset, e.needed, e.got) == ("updated_extent_list[1].count", 0, 56, 53)
    assert "updated_extent_list[1].extents[1].reserved" in str(e)
    with pytest.raises(RecordError, match="no payloads"):
        R.join_updated_extent_lists([])
    flagged = bytearray(parts[2])
    flagged[4] |= 0x80
    with pytest.raises(RecordError, match="reserved bits"):
        R.join_updated_extent_lists([parts[0], parts[1], bytes(flagged)])
    # strict=False ignores the reserved bit; More (bit 0) is still clear on the last one
    assert len(R.join_updated_extent_lists([parts[0], parts[1], bytes(flagged)],
                                           strict=False).extents) == 5
