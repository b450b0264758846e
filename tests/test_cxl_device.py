"""dcdmap.cxl.Device: the device model against reference/cxl-dcd.md §2, §3, §5 (and §5.5, §6.3).

* Region configuration (§2.1–2.2): every rule of ``check_regions`` refused with
  ConfigurationError, one test case per rule, named after it.
* QMP-level request checks (§5.2): QEMU's texts, QEMU's order (every check of extent 0, then
  every check of extent 1, ...), and a refused request changes nothing.
* Mailbox (§5.3, §3.4, §3.5, §2.1): Add DC Response (also in several payloads with More),
  Release DC (QEMU's per-entry order, the extent-count growth of each entry), Get DC
  Configuration, Get DC Extent List, as calls and as raw bytes through ``mailbox()``.
* Events (§3.2, §3.3): one record per extent, More on all but the last, the event log limit.
* Selection policies (§3.6): free, contiguous, enable-shared-access (the hosts' views agree,
  §6.3), forced and tag-based release; multi-head exclusivity (§5.5).
* The JSON-lines log and its replay.
* A state machine: three heads, two regions (one shareable), random offers, responses and
  releases, checked after every step against a plain-Python model of which head holds which
  2 MiB block.
"""
from __future__ import annotations

import io
import json
import re
import uuid
from collections import deque

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from dcdmap import TagView, verify_views
from dcdmap.cxl import (
    CAPACITY_MULTIPLIER, DC_EVENT_DTYPE, NULL_UUID, Capacity, DcEventType, DcRegion, Device,
    GetDcConfigIn, GetDcExtentListIn, Host, Offer, Opcode, Region, ReturnCode, SelectionPolicy,
    UpdatedExtent, UpdatedExtentList, check_regions, split_updated_extent_list,
)
from dcdmap.cxl import records as R
from dcdmap.cxl.device import MAILBOX_PAYLOAD_SIZE, MAX_EXTENTS
from dcdmap.cxl.regions import assign_handles
from dcdmap.errors import (
    ConfigurationError, CorruptDataError, InputTypeError, MailboxError, RequestError, SequenceError,
)

KiB = 1 << 10
MiB = 1 << 20
BLK = 2 * MiB                    # QEMU's fixed block size (§2.4)
CM = CAPACITY_MULTIPLIER         # 256 MiB
T1 = uuid.UUID("11111111-2222-3333-4444-555555555555")
T2 = uuid.UUID("66666666-7777-8888-9999-aaaaaaaaaaaa")

# QEMU's texts (§5.2)
NO_DC = "No dynamic capacity support from the device"
RID = "region id is too large"
ZERO = "extent with 0 length is not allowed"
ALIGN = "dpa or len is not aligned to region block size"
END = "extent range is beyond the region end"
DUP = "duplicate or overlapped extents are detected"
ACCESSIBLE = "cannot add DPA already accessible to the same LD"
PENDING = "cannot add DPA again while still pending"
REL_PENDING = "cannot release extent with pending DPA range"
REL_NONE = "cannot release extent with non-existing DPA range"
HELD = "cannot add DPA held by another host"     # dcdmap's multi-head rule (§5.5)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def rows(ext):
    """EXTENT_DTYPE records -> [(start, length, tag, seq)]."""
    return [(int(e["start"]), int(e["length"]), uuid.UUID(bytes=bytes(e["tag"])), int(e["shared_seq"]))
            for e in ext]


def pairs(ext):
    """EXTENT_DTYPE records -> [(start, length)]."""
    return [(int(s), int(n)) for s, n in zip(ext["start"].tolist(), ext["length"].tolist())]


def tagged(dev, head, tag):
    """The head's accepted extents carrying ``tag`` (EXTENT_DTYPE)."""
    a = dev.accepted(head)
    return a[[uuid.UUID(bytes=bytes(t)) == tag for t in a["tag"]]]


def view(ext):
    """One host's view of a tag from its extents (§6.3)."""
    return TagView(ext["start"], ext["length"], ext["shared_seq"])


def state(dev):
    """Everything a refused operation must leave as it was."""
    n = range(dev.nheads)
    return (
        [dev.capacity(r) for r in range(len(dev.regions))],
        [rows(dev.accepted(h)) for h in n],
        [[(o.id, o.region, o.policy, o.tag, rows(o.extents)) for o in dev.pending_offers(h)] for h in n],
        [dev.events_view(h) for h in n],
        [dev.generation(h) for h in n],
        [dev.event_overflow(h) for h in n],
        [dev.head_capacity(h) for h in n],
        dev.sanitized_bytes,
    )


def mailbox_code(call, *args, **kwargs):
    """The return code a mailbox call fails with (SUCCESS if it does not)."""
    try:
        call(*args, **kwargs)
    except MailboxError as e:
        return ReturnCode(e.code)
    return ReturnCode.SUCCESS


def two_regions(**kw):
    """Region 0: [0, 64 MiB), private.  Region 1: [256 MiB, 320 MiB), shareable."""
    kw.setdefault("heads", 3)
    return Device([Region(0, 64 * MiB), Region(CM, 64 * MiB, shareable=True)], **kw)


def accept(dev, head, extents, **kw):
    """Offer prescriptively and accept everything offered."""
    offer = dev.add_capacity(head, kw.pop("region", 0), extents, **kw)
    dev.add_response(head, pairs(offer.extents))
    return offer


# ---------------------------------------------------------------------------------------------
# 1. Region configuration (§2.1–2.2)
# ---------------------------------------------------------------------------------------------

REGION_RULES = [
    # (the rule, regions breaking only that rule, a fragment of the message)
    ("§2.1 at most 8 regions", [Region(i * CM, CM) for i in range(9)], "at most 8"),
    ("§2.2 length != 0", [Region(0, 0, decode_length=CM)], "has length 0"),
    ("§2.2 decode length != 0", [Region(0, 2 * MiB, decode_length=0)], "has decode length 0"),
    ("§2.2 decode length >= length", [Region(0, 2 * CM, decode_length=CM)], "less than the length"),
    ("§2.1 decode length in 256 MiB units", [Region(0, 2 * MiB, decode_length=CM + BLK)],
     "not a multiple of 256 MiB"),
    ("§2.2 block size != 0", [Region(0, 2 * MiB, block_size=0)], "not a power of two multiple of 64"),
    ("§2.2 block size a power of two", [Region(0, 6 * MiB, block_size=3 * MiB)],
     "not a power of two multiple of 64"),
    ("§2.2 block size a power of two (96 B)", [Region(0, 96 * 1024, block_size=96)],
     "not a power of two multiple of 64"),
    ("§2.2 block size a multiple of 64 B", [Region(0, 2 * MiB, block_size=32)],
     "not a power of two multiple of 64"),
    ("§2.2 length a multiple of the block size", [Region(0, 3 * MiB)], "not a multiple of the block size"),
    ("§2.2 base aligned to 256 MiB", [Region(2 * MiB, 2 * MiB)], "base is not aligned"),
    ("§2.2 base aligned to the block size", [Region(CM, 2 * CM, block_size=2 * CM)], "base is not aligned"),
    ("§2.2 increasing DPA order", [Region(CM, CM), Region(0, CM)], "does not start after"),
    ("§2.2 the same base twice", [Region(0, CM), Region(0, CM)], "does not start after"),
    ("§2.2 non-overlapping", [Region(0, 2 * CM), Region(CM, CM)], "does not start after"),
    ("§2.2 non-overlapping decoded ranges", [Region(0, BLK, decode_length=2 * CM), Region(CM, CM)],
     "does not start after"),
    ("DPA ends at 2**64: decode range past it", [Region(2**64 - CM, CM, decode_length=2 * CM)], "past 2**64"),
    ("DPA ends at 2**64: base at 2**64", [Region(2**64, CM)], "past 2**64"),
    ("regions are Region objects", [DcRegion(0, CM, CM, BLK)], "not a Region"),
    ("§2.3 one DSMAS per DSMAD handle: shareable differs",
     [Region(0, CM, dsmad_handle=3, shareable=True), Region(CM, CM, dsmad_handle=3)],
     "DSMAD handle 0x3 is also region 0's"),
    ("§2.3 one DSMAS per DSMAD handle: read-only differs",
     [Region(0, CM, dsmad_handle=3), Region(CM, CM), Region(2 * CM, CM, dsmad_handle=3, read_only=True)],
     "DSMAD handle 0x3 is also region 0's"),
]


@pytest.mark.parametrize("rule,regions,text", REGION_RULES, ids=[r[0] for r in REGION_RULES])
def test_region_rule_refused(rule, regions, text):
    with pytest.raises(ConfigurationError, match=re.escape(text)):
        check_regions(regions)
    with pytest.raises(ConfigurationError, match=re.escape(text)):     # the device refuses it too
        Device(regions)


def test_region_errors_name_the_region():
    with pytest.raises(ConfigurationError, match=r"region 1 \[0x10000000, 0x10300000\).*block size"):
        check_regions([Region(0, CM), Region(CM, 3 * MiB)])


@pytest.mark.parametrize("regions", [
    [Region(i * CM, CM) for i in range(8)],                                    # exactly 8
    [Region(0, 64 * 1024, block_size=64)],                                     # the smallest block
    [Region(2 << 30, 512 * MiB, block_size=512, dsmad_handle=0xFA)],           # the kernel mock (§2.4)
    [Region(2**64 - CM, CM)],                                                  # ends exactly at 2**64
    [Region(0, BLK), Region(CM, BLK)],                                         # decoded ranges touch
    [],                                                                        # no DC regions
    [Region(0, CM, dsmad_handle=5, shareable=True), Region(CM, CM, dsmad_handle=5, shareable=True)],
    [Region(0, CM, shareable=True), Region(CM, CM, read_only=True), Region(2 * CM, CM)],
], ids=["8 regions", "64 B blocks", "kernel mock", "ends at 2**64", "adjacent decode", "none",
        "one handle, one set of attributes", "default handles, different attributes"])
def test_valid_region_configurations_accepted(regions):
    check_regions(regions)
    shape = lambda rs: [(r.base, r.length, r.block_size, r.decode_length) for r in rs]    # noqa: E731
    assert shape(Device(regions).regions) == shape(regions)


def test_region_defaults_and_record():
    r = Region(CM, 3 * BLK, dsmad_handle=7, sanitize_on_release=True)
    assert r.decode_length == CM and r.end == CM + 3 * BLK and r.block_size == BLK
    assert r.record() == DcRegion(CM, CM, 3 * BLK, BLK, 7, True)
    assert Region.from_record(r.record(), shareable=True) == Region(CM, 3 * BLK, BLK, CM, 7, True, True)


@pytest.mark.parametrize("kwargs", [dict(base=-1, length=CM), dict(base=0, length=CM, block_size=2.0),
                                    dict(base=0, length=True), dict(base=0, length=CM, dsmad_handle=-1)])
def test_region_fields_must_be_non_negative_ints(kwargs):
    with pytest.raises(ConfigurationError):
        Region(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(heads=0), dict(heads=65), dict(heads=2.0), dict(max_extents=-1),
                                    dict(max_extents=1 << 32), dict(event_log_size=0),
                                    dict(event_log_size=1.5)])
def test_device_parameters_checked(kwargs):
    with pytest.raises(ConfigurationError):
        Device([Region(0, CM)], **kwargs)


def test_device_from_config_round_trip_and_refusal():
    dev = two_regions(seed=5, max_extents=17, event_log_size=8, vary_shared=False, require_offer_order=False)
    again = Device.from_config(json.loads(json.dumps(dev.config())))
    assert again.config() == dev.config() and again.regions == dev.regions
    with pytest.raises(ConfigurationError):
        Device.from_config({"regions": [{"base": 0}]})
    with pytest.raises(ConfigurationError):
        Device.from_config({"heads": 1})


def test_dsmas_attributes_by_handle():
    dev = Device([Region(0, CM, dsmad_handle=0xFA), Region(CM, CM, dsmad_handle=3, shareable=True, read_only=True)])
    assert dev.dsmas() == {0xFA: (False, False), 3: (True, True)}


def test_device_with_a_region_ending_at_2_64():
    """The top of the DPA space: offers, responses and releases up to 2**64 exactly."""
    base = 2**64 - CM
    dev = Device([Region(base, CM)], heads=2)
    last = 2**64 - BLK
    accept(dev, 0, [(last, BLK), (base, BLK)])
    with pytest.raises(RequestError, match=END):
        dev.add_capacity(0, 0, [(last, 2 * BLK)])
    assert mailbox_code(dev.release, 0, [(last, 2 * BLK)]) == ReturnCode.INVALID_PA
    assert mailbox_code(dev.release, 0, [(base - BLK, BLK)]) == ReturnCode.INVALID_PA
    dev.release(0, [(last, BLK)])
    assert dev.capacity(0) == Capacity(CM, CM - BLK, 0, BLK)
    dev.check_invariants()


def test_region_dsmad_handle_defaults_to_none():
    """§2.1/§2.3: a Region made without a DSMAD handle has none until a device numbers it; its
    configuration record needs one."""
    r = Region(0, CM)
    assert r.dsmad_handle is None and Region(0, CM, dsmad_handle=0).dsmad_handle == 0
    with pytest.raises(ConfigurationError, match="no DSMAD handle"):
        r.record()
    with pytest.raises(ConfigurationError):
        Region(0, CM, dsmad_handle=1.0)


def test_device_gives_default_regions_handles_no_other_region_uses():
    """§2.3: each region without a handle gets a DSMAS entry of its own (assign_handles): the
    smallest handle no other region uses, never one an explicit region has."""
    regions = [Region(0, CM), Region(CM, CM, dsmad_handle=0), Region(2 * CM, CM, shareable=True),
               Region(3 * CM, CM, dsmad_handle=2, read_only=True), Region(4 * CM, CM)]
    want = [1, 0, 3, 2, 4]
    assert [r.dsmad_handle for r in assign_handles(regions)] == want
    dev = Device(regions)
    assert [r.dsmad_handle for r in dev.regions] == want
    assert [r.dsmad_handle for r in dev.get_dc_config(0).regions] == want
    assert dev.dsmas() == {1: (False, False), 0: (False, False), 3: (True, False), 2: (False, True),
                           4: (False, False)}
    assert regions[0].dsmad_handle is None                      # the caller's regions are untouched
    assert Device.from_config(json.loads(json.dumps(dev.config()))).regions == dev.regions
    explicit = (Region(0, CM, dsmad_handle=9), Region(CM, CM, dsmad_handle=9))
    assert assign_handles(explicit) == explicit                 # explicit handles are kept, shared or not
    assert assign_handles([]) == ()


@pytest.mark.parametrize("spec", [
    [(True, None), (False, None)],
    [(False, None), (True, None)],
    [(True, None), (False, 0)],                  # the default handle must not be 0: region 1 has it
    [(False, 1), (True, None), (False, None)],
], ids=["shareable first", "shareable second", "explicit 0 after a default", "explicit 1 first"])
def test_host_reads_shareability_per_default_handle(spec):
    """§2.3 / §4.1 3: the host matches each partition to its DSMAS by handle; with default
    handles a shareable and a non-shareable region keep their own attributes."""
    regions = [Region(i * CM, 64 * MiB, shareable=s, dsmad_handle=h) for i, (s, h) in enumerate(spec)]
    dev = Device(regions)
    handles = [r.dsmad_handle for r in dev.regions]
    assert len(set(handles)) == len(handles)
    host = Host(dev)
    assert [p.shareable for p in host.partitions] == [s for s, _ in spec]
    assert [p.dsmad_handle for p in host.partitions] == handles
    dev.add_capacity(0, 0, [(8 * MiB, 2 * MiB), (0, 2 * MiB)], tag=T1)
    host.poll()
    assert host.group(T1).shareable is spec[0][0]
    assert pairs(dev.accepted(0)) == [(0, 2 * MiB), (8 * MiB, 2 * MiB)]


# ---------------------------------------------------------------------------------------------
# 2. QMP-level request checks (§5.2)
# ---------------------------------------------------------------------------------------------

def qmp_device():
    """Head 0 accepted [0, 4 MiB) and has [8, 12 MiB) pending; head 1 accepted [16, 18 MiB)."""
    dev = two_regions(heads=2, seed=7)
    accept(dev, 0, [(0, 4 * MiB)])
    accept(dev, 1, [(16 * MiB, BLK)])
    dev.add_capacity(0, 0, [(8 * MiB, 4 * MiB)])
    return dev


ADD_REFUSALS = [
    # (what fails, region, request, QEMU's text)
    ("region id >= number of regions", 2, [(0, BLK)], RID),
    ("len 0", 0, [(20 * MiB, 0)], ZERO),
    ("offset not block aligned", 0, [(21 * MiB, BLK)], ALIGN),
    ("len not block aligned", 0, [(20 * MiB, 3 * MiB)], ALIGN),
    ("offset + len past the region end", 0, [(62 * MiB, 4 * MiB)], END),
    ("offset at the region end", 0, [(64 * MiB, BLK)], END),
    ("below the region base", 1, [(0, BLK)], END),
    ("two equal extents", 0, [(20 * MiB, BLK), (20 * MiB, BLK)], DUP),
    ("two overlapping extents", 0, [(20 * MiB, 4 * MiB), (22 * MiB, 4 * MiB)], DUP),
    ("accepted by the same head", 0, [(BLK, BLK)], ACCESSIBLE),
    ("partly accepted by the same head", 0, [(BLK, 4 * MiB)], ACCESSIBLE),
    ("pending on the same head", 0, [(10 * MiB, BLK)], PENDING),
    ("held by another head", 0, [(16 * MiB, BLK)], HELD),
    # several checks fail: QEMU's order, every check of extent 0 before extent 1
    ("len 0 before alignment (one extent)", 0, [(21 * MiB, 0)], ZERO),
    ("len 0 before past-the-end (offset at the end)", 0, [(64 * MiB, 0)], ZERO),
    ("alignment before past-the-end", 0, [(65 * MiB, BLK)], ALIGN),
    ("extent 1 alignment before its overlap", 0, [(20 * MiB, BLK), (21 * MiB, BLK)], ALIGN),
    ("extent 1 overlap before its accepted check", 0, [(4 * MiB, BLK), (BLK, 4 * MiB)], DUP),
    ("accepted before pending (one extent)", 0, [(BLK, 8 * MiB)], ACCESSIBLE),
    ("extent 0 accepted before extent 1 len 0", 0, [(0, BLK), (30 * MiB, 0)], ACCESSIBLE),
    ("extent 0 pending before extent 1 accepted", 0, [(8 * MiB, BLK), (0, BLK)], PENDING),
    ("extent 2 overlap before extent 3 len 0", 0,
     [(20 * MiB, BLK), (30 * MiB, BLK), (20 * MiB, BLK), (40 * MiB, 0)], DUP),
    ("another head's only after every QEMU check (len 0)", 0, [(16 * MiB, BLK), (30 * MiB, 0)], ZERO),
    ("another head's only after every QEMU check (accepted)", 0, [(16 * MiB, BLK), (0, BLK)], ACCESSIBLE),
    ("region id before anything else", 5, [(21 * MiB, 0)], RID),
]


@pytest.mark.parametrize("what,region,req,text", ADD_REFUSALS, ids=[c[0] for c in ADD_REFUSALS])
def test_add_request_refused_with_qemu_text_and_order(what, region, req, text):
    dev = qmp_device()
    before = state(dev)
    with pytest.raises(RequestError) as err:
        dev.add_capacity(0, region, req)
    assert str(err.value) == text
    assert state(dev) == before
    assert dev.log[-1]["error"] == text
    dev.check_invariants()


RELEASE_REFUSALS = [
    ("region id >= number of regions", 2, [(0, BLK)], RID),
    ("len 0", 0, [(0, 0)], ZERO),
    ("not block aligned", 0, [(MiB, BLK)], ALIGN),
    ("past the region end", 0, [(62 * MiB, 4 * MiB)], END),
    ("overlapping extents", 0, [(0, 4 * MiB), (BLK, BLK)], DUP),
    ("pending", 0, [(8 * MiB, BLK)], REL_PENDING),
    ("not accepted", 0, [(20 * MiB, BLK)], REL_NONE),
    ("partly accepted", 0, [(BLK, 4 * MiB)], REL_NONE),
    ("accepted by another head", 0, [(16 * MiB, BLK)], REL_NONE),
    ("pending before non-existing (one extent)", 0, [(6 * MiB, 4 * MiB)], REL_PENDING),
    ("extent 0 non-existing before extent 1 pending", 0, [(20 * MiB, BLK), (8 * MiB, BLK)], REL_NONE),
    ("extent 0 pending before extent 1 len 0", 0, [(8 * MiB, BLK), (0, 0)], REL_PENDING),
    ("extent 1 len 0 before extent 2 non-existing", 0, [(0, BLK), (BLK, 0), (20 * MiB, BLK)], ZERO),
]


@pytest.mark.parametrize("what,region,req,text", RELEASE_REFUSALS, ids=[c[0] for c in RELEASE_REFUSALS])
@pytest.mark.parametrize("forced", [False, True])
def test_release_request_refused_with_qemu_text_and_order(what, region, req, text, forced):
    dev = qmp_device()
    before = state(dev)
    with pytest.raises(RequestError) as err:
        dev.release_capacity(0, region, req, forced=forced)
    assert str(err.value) == text
    assert state(dev) == before
    dev.check_invariants()


@pytest.mark.parametrize("call,text", [
    (lambda d: d.add_capacity(0, 0, [(0, BLK)], policy="lottery"), "is not a SelectionPolicy"),
    (lambda d: d.add_capacity(0, 0, [(0, BLK)], policy=9), "is not a SelectionPolicy"),
    (lambda d: d.release_capacity(0, 0, [(0, BLK)], policy="everything"), "is not a RemovalPolicy"),
    (lambda d: d.add_capacity(2, 0, [(20 * MiB, BLK)]), "host id 2 is not a head"),
    (lambda d: d.add_capacity(-1, 0, [(20 * MiB, BLK)]), "host id -1 is not a head"),
    (lambda d: d.add_capacity(True, 0, [(20 * MiB, BLK)]), "is not a head"),
    (lambda d: d.add_capacity(0, -1, [(20 * MiB, BLK)]), "is not a region index"),
    (lambda d: d.add_capacity(0, 0, [(20 * MiB, BLK)], tag="not-a-uuid"), "is not a UUID"),
    (lambda d: d.add_capacity(0, 0, policy="free"), "needs a positive length"),
    (lambda d: d.add_capacity(0, 0, policy="contiguous", length=0), "needs a positive length"),
    (lambda d: d.add_capacity(0, 0, policy="free", length=MiB), ALIGN),
    (lambda d: d.add_capacity(0, 0, [(-BLK, BLK)]), r"0 \.\. 2\*\*64-1"),
    (lambda d: d.add_capacity(0, 0, [(2**64, BLK)]), r"0 \.\. 2\*\*64-1"),
    (lambda d: d.add_capacity(0, 0, np.array([[-BLK, BLK]])), "must not be negative"),
    (lambda d: d.release_capacity(0, 0, policy="tag-based"), "tag-based removal needs a tag"),
    (lambda d: d.release_capacity(0, 0, policy="tag-based", tag=T1), "no extent with this tag"),
])
def test_other_request_refusals(call, text):
    dev = qmp_device()
    before = state(dev)
    with pytest.raises(RequestError, match=text):
        call(dev)
    assert state(dev) == before


@pytest.mark.parametrize("bad", [[(0.5, BLK)], [(0, float(BLK))], [("0", BLK)], [(0, BLK, 0)], [0, BLK],
                                 np.array([[0.0, 2.0 * MiB]]), "0,2097152"])
def test_request_types_refused(bad):
    """Floats and strings are a type error, not truncated to ints."""
    dev = qmp_device()
    before = state(dev)
    with pytest.raises(InputTypeError):
        dev.add_capacity(0, 0, bad)
    assert state(dev) == before


def test_no_dc_regions():
    dev = Device([], heads=1)
    for call in (lambda: dev.add_capacity(0, 0, [(0, BLK)]), lambda: dev.release_capacity(0, 0, [(0, BLK)])):
        with pytest.raises(RequestError, match=NO_DC):
            call()


def test_empty_prescriptive_add_queues_nothing():
    """QEMU queues no extent group and no event for an empty list."""
    dev = qmp_device()
    before = state(dev)
    offer = dev.add_capacity(0, 0, [])
    assert isinstance(offer, Offer) and len(offer.extents) == 0 and offer.length == 0
    assert state(dev) == before


@pytest.mark.parametrize("form", [
    [], (), np.zeros((0, 2), np.uint64), np.zeros(0, [("start", "<u8"), ("length", "<u8")]),
    UpdatedExtentList([]),
], ids=["list", "tuple", "(0, 2) array", "structured array", "UpdatedExtentList"])
def test_empty_prescriptive_add_succeeds_silently(form):
    """QEMU: an empty prescriptive list is no error, queues no extent group and no event; the
    next Add-Response still answers the offer made before it; the log replays it."""
    dev = two_regions(heads=1)
    first = dev.add_capacity(0, 1, [(CM, BLK)], tag=T1)
    dev.take_events(0)
    before = state(dev)
    offer = dev.add_capacity(0, 1, form, tag=T2)
    assert len(offer.extents) == 0 and offer.tag == T2 and offer.region == 1
    assert state(dev) == before and dev.events_view(0) == []
    assert [o.id for o in dev.pending_offers(0)] == [first.id]
    assert dev.log[-1]["extents"] == [] and "error" not in dev.log[-1]
    dev.add_response(0, [(CM, BLK)])
    assert rows(dev.accepted(0)) == [(CM, BLK, T1, 0)] and dev.pending_offers(0) == []
    assert state(Device.replay(log_lines(dev))) == state(dev)


def test_extents_forms_are_equivalent():
    """(start, length) pairs, an (n, 2) array and a structured array give the same offer."""
    got = []
    for form in ([(20 * MiB, BLK), (30 * MiB, 4 * MiB)],
                 np.array([[20 * MiB, BLK], [30 * MiB, 4 * MiB]], np.uint64),
                 np.array([(20 * MiB, BLK), (30 * MiB, 4 * MiB)], [("start", "<u8"), ("length", "<u8")]),
                 UpdatedExtentList([UpdatedExtent(20 * MiB, BLK), UpdatedExtent(30 * MiB, 4 * MiB)])):
        dev = qmp_device()
        got.append(rows(dev.add_capacity(0, 0, form).extents))
    assert all(g == got[0] for g in got)


def test_release_request_changes_nothing_until_the_host_answers():
    dev = qmp_device()
    before = state(dev)
    ext = dev.release_capacity(0, 0, [(0, BLK)])
    assert pairs(ext) == [(0, BLK)]
    after = state(dev)
    assert after[:3] == before[:3] and after[4:] == before[4:]     # only the events differ
    assert dev.events_view(0)[-1]["type"] == "RELEASE_CAPACITY"
    dev.release(0, [(0, BLK)])
    assert rows(dev.accepted(0)) == [(BLK, BLK, NULL_UUID, 0)]


# ---------------------------------------------------------------------------------------------
# 3. Mailbox: Add DC Response (§5.3, §3.4)
# ---------------------------------------------------------------------------------------------

def test_add_response_count_0_drops_the_oldest_offer():
    dev = two_regions(heads=1)
    first = dev.add_capacity(0, 0, [(0, 4 * MiB), (8 * MiB, BLK)])
    second = dev.add_capacity(0, 0, [(16 * MiB, BLK)])
    assert dev.capacity(0) == Capacity(64 * MiB, 56 * MiB, 8 * MiB, 0)
    gen = dev.generation(0)
    dev.add_response(0, [])
    assert [o.id for o in dev.pending_offers(0)] == [second.id] and first.id != second.id
    assert dev.capacity(0) == Capacity(64 * MiB, 62 * MiB, BLK, 0)
    assert dev.holders(0) == [] and dev.holders(16 * MiB) == [0]
    assert dev.generation(0) == gen                      # nothing accepted
    dev.add_response(0, [])
    dev.add_response(0, [])                              # nothing pending: still success
    assert dev.capacity(0).free == 64 * MiB and dev.log[-1]["status"] == "SUCCESS"
    dev.check_invariants()


def test_add_response_resources_exhausted():
    """count + tracked (pending + accepted, QEMU counts pending twice here) > max_extents."""
    dev = two_regions(heads=1, max_extents=5)
    accept(dev, 0, [(0, BLK), (4 * MiB, BLK)])            # 2 accepted
    dev.add_capacity(0, 0, [(8 * MiB, BLK), (12 * MiB, BLK)])   # 2 pending: 4 tracked
    before = state(dev)
    two = [(8 * MiB, BLK), (12 * MiB, BLK)]
    assert mailbox_code(dev.add_response, 0, two) == ReturnCode.RESOURCES_EXHAUSTED
    # before the malformed-list check: even a malformed list gets RESOURCES_EXHAUSTED
    assert mailbox_code(dev.add_response, 0, [(MiB, BLK), (1 << 40, BLK)]) == ReturnCode.RESOURCES_EXHAUSTED
    assert state(dev) == before
    assert dev.log[-1]["status"] == "RESOURCES_EXHAUSTED"
    dev.add_response(0, [(8 * MiB, BLK)])                 # 1 + 4 == 5: accepted
    assert len(dev.accepted(0)) == 3


MALFORMED = [
    # (what, response, code): the first bad entry in list order decides (QEMU)
    ("below the first region", [(0, BLK)], ReturnCode.INVALID_PA),
    ("between regions", [(CM + 64 * MiB, BLK)], ReturnCode.INVALID_PA),
    ("past the last region", [(4 * CM + 64 * MiB, BLK)], ReturnCode.INVALID_PA),
    ("crossing a region end", [(CM + 62 * MiB, 4 * MiB)], ReturnCode.INVALID_PA),
    ("length 0", [(CM, 0)], ReturnCode.INVALID_PA),
    ("start not block aligned", [(CM + MiB, BLK)], ReturnCode.INVALID_EXTENT_LIST),
    ("length not block aligned", [(CM, 3 * MiB)], ReturnCode.INVALID_EXTENT_LIST),
    ("two entries overlap", [(CM, 4 * MiB), (CM + BLK, BLK)], ReturnCode.INVALID_EXTENT_LIST),
    ("two equal entries", [(CM, BLK), (CM, BLK)], ReturnCode.INVALID_EXTENT_LIST),
    ("misaligned entry before an outside entry", [(CM + MiB, BLK), (0, BLK)], ReturnCode.INVALID_EXTENT_LIST),
    ("outside entry before a misaligned entry", [(0, BLK), (CM + MiB, BLK)], ReturnCode.INVALID_PA),
    ("overlap at entry 1 before outside entry 2", [(CM, BLK), (CM, BLK), (0, BLK)], ReturnCode.INVALID_EXTENT_LIST),
    ("outside entry 1 before overlap at entry 2", [(CM, BLK), (0, BLK), (CM, BLK)], ReturnCode.INVALID_PA),
    ("malformed before not-in-the-offer", [(CM + 40 * MiB, BLK), (CM + MiB, BLK)], ReturnCode.INVALID_EXTENT_LIST),
]


@pytest.mark.parametrize("what,response,code", MALFORMED, ids=[m[0] for m in MALFORMED])
@pytest.mark.parametrize("call", ["add_response", "release"])
def test_malformed_extent_list(what, response, code, call):
    dev = Device([Region(CM, 64 * MiB), Region(4 * CM, 64 * MiB)], heads=1)
    accept(dev, 0, [(CM, 8 * MiB)], region=0)
    dev.add_capacity(0, 0, [(CM + 16 * MiB, 8 * MiB)])
    before = state(dev)
    assert mailbox_code(getattr(dev, call), 0, response) == code
    assert state(dev) == before
    dev.check_invariants()


def test_add_response_must_lie_inside_one_extent_of_the_oldest_offer():
    dev = two_regions(heads=1)
    dev.add_capacity(0, 0, [(0, 4 * MiB), (4 * MiB, 4 * MiB)])     # adjacent extents
    dev.add_capacity(0, 0, [(16 * MiB, 4 * MiB)])
    before = state(dev)
    for bad in ([(16 * MiB, BLK)],                   # in the second offer, not the oldest
                [(0, 4 * MiB), (16 * MiB, BLK)],     # one good entry, one in the second offer
                [(BLK, 4 * MiB)],                    # spans two offered extents
                [(8 * MiB, BLK)],                    # offered nowhere
                [(0, 8 * MiB)]):                     # the whole offer as one extent
        assert mailbox_code(dev.add_response, 0, bad) == ReturnCode.INVALID_PA, bad
        assert state(dev) == before
    dev.add_response(0, [(0, 4 * MiB)])
    dev.add_response(0, [(16 * MiB, BLK)])           # now the oldest
    assert pairs(dev.accepted(0)) == [(0, 4 * MiB), (16 * MiB, BLK)]


def test_add_response_with_nothing_pending():
    dev = two_regions(heads=1)
    assert mailbox_code(dev.add_response, 0, [(0, BLK)]) == ReturnCode.INVALID_PA


def test_add_response_overlapping_accepted_is_invalid_pa():
    """QEMU's dry run refuses a range overlapping accepted capacity (INVALID_PA).  The add checks
    keep every offer clear of the head's accepted capacity, so the state is made by hand."""
    dev = two_regions(heads=1)
    dev.add_capacity(0, 0, [(0, 4 * MiB)])
    dev._heads[0].accepted.insert(BLK, BLK, label=0)          # white box: accepted under the offer
    assert mailbox_code(dev.add_response, 0, [(0, 4 * MiB)]) == ReturnCode.INVALID_PA
    assert mailbox_code(dev.add_response, 0, [(0, BLK)]) == ReturnCode.SUCCESS


@pytest.mark.parametrize("order", [False, True])
def test_add_response_offer_order(order):
    """Listed in another order than offered: INVALID_EXTENT_LIST when require_offer_order
    (K11 mock, CXL r4.0 8.2.10.9.9.3), accepted when not (QEMU)."""
    dev = two_regions(heads=1, require_offer_order=order)
    dev.add_capacity(0, 0, [(20 * MiB, BLK), (4 * MiB, BLK), (12 * MiB, 4 * MiB)])
    before = state(dev)
    reordered = [(4 * MiB, BLK), (20 * MiB, BLK)]
    if order:
        assert mailbox_code(dev.add_response, 0, reordered) == ReturnCode.INVALID_EXTENT_LIST
        assert state(dev) == before
        # offer order with gaps, and pieces of one extent, are fine
        dev.add_response(0, [(20 * MiB, BLK), (12 * MiB, BLK), (14 * MiB, BLK)])
        assert pairs(dev.accepted(0)) == [(12 * MiB, BLK), (14 * MiB, BLK), (20 * MiB, BLK)]
    else:
        dev.add_response(0, reordered)
        assert pairs(dev.accepted(0)) == [(4 * MiB, BLK), (20 * MiB, BLK)]
    dev.check_invariants()


def test_add_response_partial_acceptance():
    """A sub-range of an offered extent is accepted; the rest of the offer returns to free."""
    dev = two_regions(heads=1)
    dev.add_capacity(0, 1, [(CM, 8 * MiB), (CM + 16 * MiB, BLK)], tag=T1)
    dev.add_response(0, [(CM + BLK, BLK), (CM + 6 * MiB, BLK)])
    assert rows(dev.accepted(0)) == [(CM + BLK, BLK, T1, 0), (CM + 6 * MiB, BLK, T1, 0)]
    assert dev.capacity(1) == Capacity(64 * MiB, 60 * MiB, 0, 4 * MiB)
    assert dev.pending_offers(0) == [] and dev.holders(CM) == [] and dev.holders(CM + BLK) == [0]
    assert dev.head_capacity(0) == (0, 4 * MiB)
    dev.check_invariants()


def test_add_responses_answer_offers_in_fifo_order():
    dev = two_regions(heads=1)
    offers = [dev.add_capacity(0, 0, [(i * 8 * MiB, BLK)]) for i in range(3)]
    for i, o in enumerate(offers):
        assert [p.id for p in dev.pending_offers(0)] == [p.id for p in offers[i:]]
        if i + 1 < len(offers):      # a later offer cannot be answered first
            assert mailbox_code(dev.add_response, 0, pairs(offers[i + 1].extents)) == ReturnCode.INVALID_PA
        dev.add_response(0, pairs(o.extents))
    assert pairs(dev.accepted(0)) == [(0, BLK), (8 * MiB, BLK), (16 * MiB, BLK)]


# An Add-Response split over several payloads (§3.4 More)
FIVE = [(0, BLK), (4 * MiB, BLK), (8 * MiB, 4 * MiB), (16 * MiB, BLK), (20 * MiB, BLK)]
SECOND = [(40 * MiB, BLK), (44 * MiB, BLK)]
PAYLOADS = [FIVE[:2], FIVE[2:4], FIVE[4:]]          # as split_updated_extent_list cuts it, 2 a payload
TWO_A_PAYLOAD = 8 + 2 * 24


def more_device(**kw):
    """Head 0: an offer of the five extents FIVE, then the offer SECOND behind it."""
    dev = two_regions(heads=1, **kw)
    first = dev.add_capacity(0, 0, FIVE)
    second = dev.add_capacity(0, 0, SECOND)
    return dev, first, second


def send(dev, payloads, wire):
    """An Add-Response in several payloads, More on all but the last: the codes answered."""
    codes = []
    for i, part in enumerate(payloads):
        more = i < len(payloads) - 1
        if wire:
            codes.append(dev.mailbox(0, Opcode.ADD_DC_RESPONSE, updated(*part, more=more))[0])
        else:
            codes.append(mailbox_code(dev.add_response, 0, part, more=more))
    return codes


def test_split_updated_extent_list_cuts_five_extents_in_three_payloads():
    """§3.4: the payloads the kernel would send for FIVE with room for two extents each."""
    raw = split_updated_extent_list([UpdatedExtent(s, n) for s, n in FIVE], TWO_A_PAYLOAD)
    got = [R.unpack_updated_extent_list(p) for p in raw]
    assert [(len(p.extents), p.more) for p in got] == [(2, True), (2, True), (1, False)]
    assert [[(e.start, e.length) for e in p.extents] for p in got] == PAYLOADS


@pytest.mark.parametrize("wire", [False, True], ids=["add_response", "mailbox"])
def test_add_response_more_payloads_answer_one_offer(wire):
    """§3.4 More: payloads with More set are kept and change nothing; the payload with More
    clear answers the joined list: all five extents of the oldest offer are accepted, that
    offer alone is retired, and the list changes once (one generation)."""
    dev, first, second = more_device()
    before = state(dev)
    if wire:
        raw = split_updated_extent_list([UpdatedExtent(s, n) for s, n in FIVE], TWO_A_PAYLOAD)
        for p in raw[:-1]:
            assert dev.mailbox(0, Opcode.ADD_DC_RESPONSE, p) == (ReturnCode.SUCCESS, b"")
            assert state(dev) == before
        assert dev.mailbox(0, Opcode.ADD_DC_RESPONSE, raw[-1]) == (ReturnCode.SUCCESS, b"")
    else:
        for part in PAYLOADS[:-1]:
            dev.add_response(0, part, more=True)
            assert state(dev) == before
        dev.add_response(0, PAYLOADS[-1])
    assert pairs(dev.accepted(0)) == FIVE
    assert [o.id for o in dev.pending_offers(0)] == [second.id]
    assert dev.generation(0) == 1
    assert dev.capacity(0) == Capacity(64 * MiB, 48 * MiB, 4 * MiB, 12 * MiB)
    assert [(e.get("more", False), e["status"]) for e in dev.log if e["op"] == "add_response"] == \
        [(True, "SUCCESS"), (True, "SUCCESS"), (False, "SUCCESS")]
    dev.check_invariants()
    dev.add_response(0, SECOND)                   # the next response answers the next offer
    assert pairs(dev.accepted(0)) == FIVE + SECOND


MORE_REFUSALS = [
    # (what is wrong with the joined list, payloads, code); every payload alone would pass.
    # max_extents 512, but 9 for the last case (7 tracked: a payload of 2 fits, the 5 joined not)
    ("outside the offer, in the first payload", [[(30 * MiB, BLK)], [(0, BLK)], [(4 * MiB, BLK)]],
     ReturnCode.INVALID_PA),
    ("in the next offer, in the last payload", [FIVE[:2], FIVE[2:4], SECOND[:1]], ReturnCode.INVALID_PA),
    ("overlap across payloads", [[(0, BLK)], [(8 * MiB, 4 * MiB)], [(10 * MiB, BLK)]],
     ReturnCode.INVALID_EXTENT_LIST),
    ("the same extent in two payloads", [FIVE[:1], FIVE[:1]], ReturnCode.INVALID_EXTENT_LIST),
    ("offer order across payloads", [[(4 * MiB, BLK)], [(0, BLK)]], ReturnCode.INVALID_EXTENT_LIST),
    ("misaligned, in the middle payload", [[(0, BLK)], [(17 * MiB, BLK)], [(20 * MiB, BLK)]],
     ReturnCode.INVALID_EXTENT_LIST),
    ("more extents than the limit, joined", PAYLOADS, ReturnCode.RESOURCES_EXHAUSTED),
]


@pytest.mark.parametrize("wire", [False, True], ids=["add_response", "mailbox"])
@pytest.mark.parametrize("what,payloads,code", MORE_REFUSALS, ids=[m[0] for m in MORE_REFUSALS])
def test_add_response_more_error_in_the_joined_list_refuses_it_all(what, payloads, code, wire):
    """§3.4/§5.3: the checks run on the joined list; an error anywhere refuses every payload of
    the response, changes nothing, and clears the kept payloads: the next response stands alone."""
    limit = 9 if code == ReturnCode.RESOURCES_EXHAUSTED else MAX_EXTENTS
    dev, first, second = more_device(max_extents=limit)
    before = state(dev)
    assert send(dev, payloads, wire) == [ReturnCode.SUCCESS] * (len(payloads) - 1) + [code]
    assert state(dev) == before
    assert dev.log[-1]["status"] == code.name
    dev.check_invariants()
    # a correct response now: accepted as it is (kept payloads would have made it overlap)
    assert send(dev, [FIVE[:1], FIVE[1:2]], wire) == [ReturnCode.SUCCESS] * 2
    assert pairs(dev.accepted(0)) == FIVE[:2]
    assert [o.id for o in dev.pending_offers(0)] == [second.id]
    dev.check_invariants()


def test_add_response_more_payloads_are_kept_per_head():
    """§3.4: each head's More payloads join only that head's response."""
    dev = two_regions(heads=2)
    dev.add_capacity(0, 0, [(0, BLK), (4 * MiB, BLK)])
    dev.add_capacity(1, 0, [(8 * MiB, BLK), (12 * MiB, BLK)])
    dev.add_response(0, [(0, BLK)], more=True)
    dev.add_response(1, [(8 * MiB, BLK)], more=True)
    dev.add_response(1, [(12 * MiB, BLK)])
    assert pairs(dev.accepted(1)) == [(8 * MiB, BLK), (12 * MiB, BLK)] and pairs(dev.accepted(0)) == []
    dev.add_response(0, [(4 * MiB, BLK)])
    assert pairs(dev.accepted(0)) == [(0, BLK), (4 * MiB, BLK)]
    dev.check_invariants()


# ---------------------------------------------------------------------------------------------
# 3. Mailbox: Release DC (§5.3)
# ---------------------------------------------------------------------------------------------

def test_release_count_0_is_invalid_input():
    dev = qmp_device()
    before = state(dev)
    assert mailbox_code(dev.release, 0, []) == ReturnCode.INVALID_INPUT
    assert state(dev) == before and dev.log[-1]["status"] == "INVALID_INPUT"


@pytest.mark.parametrize("rng", [(20 * MiB, BLK), (8 * MiB, BLK), (BLK, 4 * MiB), (16 * MiB, BLK)],
                         ids=["free", "pending", "partly accepted", "another head's"])
def test_release_not_accepted_is_invalid_pa(rng):
    dev = qmp_device()
    before = state(dev)
    assert mailbox_code(dev.release, 0, [rng]) == ReturnCode.INVALID_PA
    assert state(dev) == before


def test_release_part_of_an_extent_splits_it():
    dev = two_regions(heads=1)
    accept(dev, 0, [(CM, 8 * MiB)], region=1, tag=T1)
    gen = dev.generation(0)
    dev.release(0, [(CM + BLK, BLK)])
    assert rows(dev.accepted(0)) == [(CM, BLK, T1, 0), (CM + 4 * MiB, 4 * MiB, T1, 0)]
    assert dev.generation(0) == gen + 1
    dev.release(0, [(CM, BLK)])                    # the head of an extent: no split
    dev.release(0, [(CM + 6 * MiB, BLK)])          # the tail
    assert rows(dev.accepted(0)) == [(CM + 4 * MiB, BLK, T1, 0)]
    assert dev.capacity(1) == Capacity(64 * MiB, 62 * MiB, 0, BLK)
    assert dev.generation(0) == gen + 3
    dev.check_invariants()


def test_release_spanning_several_extents():
    dev = two_regions(heads=1)
    accept(dev, 0, [(0, 4 * MiB), (4 * MiB, 4 * MiB), (8 * MiB, 4 * MiB)])
    assert len(dev.accepted(0)) == 3                # adjacent extents stay separate
    dev.release(0, [(BLK, 8 * MiB)])                # the tail of 1, all of 2, the head of 3
    assert pairs(dev.accepted(0)) == [(0, BLK), (10 * MiB, BLK)]
    # several ranges in one Release DC
    dev.release(0, [(10 * MiB, BLK), (0, BLK)])
    assert len(dev.accepted(0)) == 0 and dev.capacity(0).free == 64 * MiB


def test_release_resources_exhausted_by_splits():
    dev = two_regions(heads=1, max_extents=3)
    accept(dev, 0, [(0, 12 * MiB)])
    dev.add_capacity(0, 0, [(16 * MiB, BLK)])          # pending counts: 2 tracked
    dev.release(0, [(BLK, BLK)])                       # 1 -> 2 extents: 3 tracked
    before = state(dev)
    assert mailbox_code(dev.release, 0, [(6 * MiB, BLK)]) == ReturnCode.RESOURCES_EXHAUSTED
    assert state(dev) == before
    dev.release(0, [(4 * MiB, BLK)])                   # cuts the head: no growth
    dev.release(0, [(0, BLK), (6 * MiB, 6 * MiB)])     # removes whole extents
    assert pairs(dev.accepted(0)) == []


def test_release_malformed_before_not_accepted():
    dev = qmp_device()
    assert mailbox_code(dev.release, 0, [(20 * MiB, BLK), (MiB, BLK)]) == ReturnCode.INVALID_EXTENT_LIST


def limit_device():
    """Head 0 at its limit of 3 extents: [0, 2) and [4, 12) MiB accepted, [16, 18) MiB pending."""
    dev = two_regions(heads=1, max_extents=3)
    accept(dev, 0, [(0, 12 * MiB)])
    dev.add_capacity(0, 0, [(16 * MiB, BLK)])
    dev.release(0, [(BLK, BLK)])
    assert pairs(dev.accepted(0)) == [(0, BLK), (4 * MiB, 8 * MiB)]
    return dev


SPLIT = (6 * MiB, BLK)           # a middle cut of [4, 12) MiB: +1, past the limit
WHOLE = (0, BLK)                 # a whole extent: -1
HEAD = (4 * MiB, BLK)            # the head of [4, 12) MiB: no growth
UNACCEPTED = (20 * MiB, BLK)
PENDING_RANGE = (16 * MiB, BLK)
OK = ReturnCode.SUCCESS
RELEASE_ORDER = [
    # (what, Release DC entries, code, accepted afterwards): QEMU cxl_dc_extent_release_dry_run
    # checks entry 0 (not fully accepted, then the count), then entry 1, ...
    ("a split past the limit, then an unaccepted range", [SPLIT, UNACCEPTED], ReturnCode.RESOURCES_EXHAUSTED, None),
    ("an unaccepted range, then a split past the limit", [UNACCEPTED, SPLIT], ReturnCode.INVALID_PA, None),
    ("a split past the limit, then a pending range", [SPLIT, PENDING_RANGE], ReturnCode.RESOURCES_EXHAUSTED, None),
    ("a pending range, then a split past the limit", [PENDING_RANGE, SPLIT], ReturnCode.INVALID_PA, None),
    ("a whole extent, then an unaccepted range", [WHOLE, UNACCEPTED], ReturnCode.INVALID_PA, None),
    ("an early overflow a later entry would undo", [SPLIT, WHOLE], ReturnCode.RESOURCES_EXHAUSTED, None),
    ("the same entries, the undoing one first", [WHOLE, SPLIT], OK, [(4 * MiB, BLK), (8 * MiB, 4 * MiB)]),
    ("a head cut at the limit", [HEAD], OK, [(0, BLK), (6 * MiB, 6 * MiB)]),
    # after the head cut, SPLIT starts the remaining extent: a head cut too, no growth
    ("a head cut, then what was a middle cut", [HEAD, SPLIT], OK, [(0, BLK), (8 * MiB, 4 * MiB)]),
]


@pytest.mark.parametrize("wire", [False, True], ids=["release", "mailbox"])
@pytest.mark.parametrize("what,entries,code,after", RELEASE_ORDER, ids=[r[0] for r in RELEASE_ORDER])
def test_release_checks_each_entry_in_list_order(what, entries, code, after, wire):
    """§5.3 Release DC, QEMU's per-entry order: for each entry in list order, "not fully
    accepted" (INVALID_PA), then the extent count so far against the limit
    (RESOURCES_EXHAUSTED); the first entry that fails decides, and a refusal changes nothing."""
    dev = limit_device()
    before = state(dev)
    if wire:
        got = dev.mailbox(0, Opcode.RELEASE_DC, updated(*entries))[0]
    else:
        got = mailbox_code(dev.release, 0, entries)
    assert got == code
    assert dev.log[-1]["status"] == code.name
    if code == OK:
        assert pairs(dev.accepted(0)) == after
    else:
        assert state(dev) == before
    dev.check_invariants()


TOP = Region(2**64 - CM, CM, block_size=64 * KiB)       # a region ending at 2**64
TB = TOP.block_size
LOW = Region(0, CM, block_size=64)                      # 64 B blocks from DPA 0
T64 = 2**64
R0 = Region(0, CM)
GROWTH = [
    # (what, region, accepted extents (one offer), Release DC entries, growth of each entry)
    ("a whole extent", R0, [(0, 8 * MiB)], [(0, 8 * MiB)], (-1,)),
    ("a middle cut", R0, [(0, 8 * MiB)], [(2 * MiB, BLK)], (+1,)),
    ("a head cut at DPA 0", R0, [(0, 8 * MiB)], [(0, BLK)], (0,)),
    ("a tail cut", R0, [(0, 8 * MiB)], [(6 * MiB, BLK)], (0,)),
    ("three extents, remainders at both ends", R0, [(0, 4 * MiB), (4 * MiB, 4 * MiB), (8 * MiB, 4 * MiB)],
     [(BLK, 8 * MiB)], (-1,)),
    ("three whole extents", R0, [(0, 4 * MiB), (4 * MiB, 4 * MiB), (8 * MiB, 4 * MiB)], [(0, 12 * MiB)], (-3,)),
    ("a head remainder and a whole extent", R0, [(0, 4 * MiB), (4 * MiB, 4 * MiB), (8 * MiB, 4 * MiB)],
     [(BLK, 6 * MiB)], (-1,)),
    ("two extents, remainders at both ends", R0, [(0, 4 * MiB), (4 * MiB, 4 * MiB)], [(BLK, 4 * MiB)], (0,)),
    ("two middle cuts of one extent", R0, [(0, 16 * MiB)], [(BLK, BLK), (10 * MiB, BLK)], (+1, +1)),
    ("a middle cut and a whole extent", R0, [(0, 8 * MiB), (16 * MiB, BLK)], [(BLK, BLK), (16 * MiB, BLK)], (+1, -1)),
    ("a whole extent, then a middle cut of a neighbour", R0, [(0, 4 * MiB), (4 * MiB, 8 * MiB)],
     [(0, 4 * MiB), (6 * MiB, BLK)], (-1, +1)),
    ("top: a tail cut ending at 2**64", TOP, [(T64 - 4 * TB, 4 * TB)], [(T64 - TB, TB)], (0,)),
    ("top: the whole extent ending at 2**64", TOP, [(T64 - 4 * TB, 4 * TB)], [(T64 - 4 * TB, 4 * TB)], (-1,)),
    ("top: a middle cut", TOP, [(T64 - 4 * TB, 4 * TB)], [(T64 - 3 * TB, TB)], (+1,)),
    ("top: the last block of the space", TOP, [(T64 - TB, TB)], [(T64 - TB, TB)], (-1,)),
    ("top: two extents up to 2**64", TOP, [(T64 - 8 * TB, 4 * TB), (T64 - 4 * TB, 4 * TB)],
     [(T64 - 6 * TB, 6 * TB)], (-1,)),
    ("top: two extents, remainders at both ends", TOP, [(T64 - 8 * TB, 4 * TB), (T64 - 4 * TB, 4 * TB)],
     [(T64 - 6 * TB, 4 * TB)], (0,)),
    ("DPA 0: a head cut", LOW, [(0, 256)], [(0, 64)], (0,)),
    ("DPA 0: the whole extent", LOW, [(0, 256)], [(0, 256)], (-1,)),
    ("DPA 0: a middle cut", LOW, [(0, 256)], [(64, 64)], (+1,)),
    ("DPA 0: two extents from 0", LOW, [(0, 128), (128, 128)], [(0, 192)], (-1,)),
]
GROWTH_LIMIT = 16


def growth_device(region, extents, tracked):
    """Head 0 with ``extents`` accepted and one-block offers pending up to ``tracked`` extents,
    in a device limited to GROWTH_LIMIT (offers are not limited, so tracked may exceed it)."""
    dev = Device([region], max_extents=GROWTH_LIMIT)
    accept(dev, 0, extents)
    bs = region.block_size
    spare = region.base + region.length // 2                  # far from every accepted extent
    if tracked > len(extents):
        dev.add_capacity(0, 0, [(spare + 2 * i * bs, bs) for i in range(tracked - len(extents))])
    return dev


@pytest.mark.parametrize("what,region,extents,entries,growths", GROWTH, ids=[g[0] for g in GROWTH])
def test_release_extent_count_growth(what, region, extents, entries, growths):
    """§5.3 Release DC: each entry adds the remainders it leaves at its two ends and removes the
    extents it covers; tracked + the growth so far is checked after each entry, refused
    (RESOURCES_EXHAUSTED) past max_extents (pending offers count)."""
    growth = sum(growths)
    peak = max(np.cumsum(growths))
    tracked = GROWTH_LIMIT - max(peak, 0)                    # the peak reaches the limit exactly
    dev = growth_device(region, extents, tracked)
    held = dev.head_capacity(0)[1]
    dev.release(0, entries)
    assert len(dev.accepted(0)) == len(extents) + growth
    assert dev.head_capacity(0)[1] == held - sum(n for _, n in entries)
    assert dev.get_dc_config(0).available_extents == GROWTH_LIMIT - (tracked + growth)
    for s, n in entries:
        assert dev.holders(s) == [] and dev.holders(s + n - 64) == []
    dev.check_invariants()
    if peak >= 0:                                           # one more tracked extent: refused
        dev = growth_device(region, extents, tracked + 1)
        before = state(dev)
        assert mailbox_code(dev.release, 0, entries) == ReturnCode.RESOURCES_EXHAUSTED
        assert state(dev) == before


@pytest.mark.parametrize("entries", [[(4 * MiB, BLK), (6 * MiB, BLK)], [(6 * MiB, BLK), (4 * MiB, BLK)]],
                         ids=["ascending", "descending"])
def test_release_entries_touching_inside_one_extent_grow_as_in_qemu(entries):
    """§5.3 / QEMU cxl_dc_extent_release_dry_run: [4, 6) then [6, 8) MiB of the extent
    [0, 16) MiB is a middle cut (+1) and then an end cut of a remainder (0): +1 in all, so it
    fits a limit of 2 extents."""
    dev = Device([R0], max_extents=2)
    accept(dev, 0, [(0, 16 * MiB)])
    dev.release(0, entries)
    assert pairs(dev.accepted(0)) == [(0, 4 * MiB), (8 * MiB, 8 * MiB)]


def test_release_limit_checked_after_each_extent_piece():
    """QEMU checks cnt_delta + total_extent_count > limit after every extent piece.  With more
    tracked than the limit (6 of 4: offers are not limited), an entry covering two whole
    extents is refused at the first piece (5 > 4) though it ends at the limit (4)."""
    dev = growth_device(R0, [(0, BLK), (BLK, BLK)], GROWTH_LIMIT + 2)
    before = state(dev)
    assert mailbox_code(dev.release, 0, [(0, 2 * BLK)]) == ReturnCode.RESOURCES_EXHAUSTED
    assert state(dev) == before


def test_generation_counts_accepts_and_releases():
    dev = two_regions(heads=2)
    assert dev.generation(0) == 0
    dev.add_capacity(0, 0, [(0, 4 * MiB)])
    assert dev.generation(0) == 0                      # an offer is not an accept
    dev.add_response(0, [(0, BLK)])
    assert dev.generation(0) == 1
    dev.add_capacity(0, 0, [(8 * MiB, BLK)])
    dev.add_response(0, [])                            # a rejection changes no list
    assert dev.generation(0) == 1
    mailbox_code(dev.release, 0, [(8 * MiB, BLK)])     # refused
    assert dev.generation(0) == 1
    dev.release(0, [(0, BLK)])
    assert dev.generation(0) == 2 and dev.generation(1) == 0
    assert dev.get_extent_list(0).generation == 2


@pytest.mark.parametrize("region_flag,request_flag,forced", [
    (True, False, False), (False, True, False), (False, True, True), (False, False, True)])
def test_sanitize_counts_released_bytes(region_flag, request_flag, forced):
    dev = Device([Region(0, 64 * MiB, sanitize_on_release=region_flag)], heads=1)
    accept(dev, 0, [(0, 8 * MiB)])
    dev.release_capacity(0, 0, [(0, 4 * MiB)], sanitize=request_flag, forced=forced)
    if not forced:
        assert dev.sanitized_bytes == 0                # nothing released yet
        dev.release(0, [(0, 4 * MiB)])
    expect = 4 * MiB if region_flag or request_flag else 0
    assert dev.sanitized_bytes == expect
    dev.release(0, [(4 * MiB, BLK)])                   # a host release nobody asked to sanitize
    assert dev.sanitized_bytes == expect + (BLK if region_flag else 0)
    assert dev.get_dc_config(0).regions[0].sanitize_on_release == region_flag


def test_sanitize_waits_for_the_last_holder():
    """Shared capacity is sanitized only when no head holds it any more."""
    dev = Device([Region(0, 64 * MiB, shareable=True, sanitize_on_release=True)], heads=2, vary_shared=False)
    accept(dev, 0, [(0, 4 * MiB)], tag=T1)
    shared = dev.add_capacity(1, 0, policy="enable-shared-access", tag=T1)
    dev.add_response(1, pairs(shared.extents))
    dev.release(0, [(0, 4 * MiB)])
    assert dev.sanitized_bytes == 0 and dev.holders(0) == [1]
    dev.release(1, [(0, 4 * MiB)])
    assert dev.sanitized_bytes == 4 * MiB and dev.holders(0) == []


def test_sanitize_counts_only_the_released_bytes_that_become_free():
    """Sanitize on release counts exactly the released bytes nobody holds any more: a range
    partly still held by another head (enable-shared-access, accepted or pending) counts only
    its freed part, and the rest counts when its last holder releases it."""
    dev = Device([Region(0, 64 * MiB, shareable=True, sanitize_on_release=True)], heads=3, vary_shared=False)
    accept(dev, 0, [(0, 8 * MiB)], tag=T1)
    share(dev, 1, T1, region=0)
    dev.release(1, [(0, 4 * MiB)])                     # head 0 still holds [0, 4) MiB
    assert dev.sanitized_bytes == 0
    offer = share(dev, 2, T1, region=0, accept_all=False)
    dev.release(0, [(0, 8 * MiB)])                     # [0, 4) pending on head 2, [4, 8) held by 1 and 2
    assert dev.sanitized_bytes == 0
    dev.add_response(2, pairs(offer.extents))
    dev.release(2, [(0, 8 * MiB)])                     # frees [0, 4) MiB only: head 1 holds [4, 8)
    assert dev.sanitized_bytes == 4 * MiB and dev.holders(4 * MiB) == [1]
    dev.release(1, [(6 * MiB, BLK), (4 * MiB, BLK)])
    assert dev.sanitized_bytes == 8 * MiB and dev.capacity(0).free == 64 * MiB
    dev.check_invariants()


def test_sanitize_request_flag_is_used_up_and_unmarked_bytes_count_0():
    """release_capacity(..., sanitize=True), then the host's release of those ranges: the
    released bytes count once, the mark is used up with them, and bytes in regions without the
    flag that nobody asked to sanitize count 0."""
    dev = two_regions(heads=1)                          # neither region has the flag
    accept(dev, 0, [(0, 8 * MiB)])
    accept(dev, 0, [(CM, 8 * MiB)], region=1, tag=T1)
    dev.release_capacity(0, 0, [(BLK, BLK), (6 * MiB, BLK)], sanitize=True)
    assert dev.sanitized_bytes == 0                     # nothing released yet
    dev.release(0, [(6 * MiB, BLK), (BLK, BLK)])
    assert dev.sanitized_bytes == 2 * BLK
    dev.release(0, [(0, BLK), (4 * MiB, BLK), (CM, 8 * MiB)])     # nobody asked: 0
    assert dev.sanitized_bytes == 2 * BLK
    accept(dev, 0, [(0, 8 * MiB)])                      # the same bytes again: the mark is gone
    dev.release(0, [(0, 8 * MiB)])
    assert dev.sanitized_bytes == 2 * BLK
    # tag-based, answered by the host in pieces
    accept(dev, 0, [(CM, 8 * MiB)], region=1, tag=T2)
    dev.release_capacity(0, 1, policy="tag-based", tag=T2, sanitize=True)
    dev.release(0, [(CM, 4 * MiB)])
    dev.release(0, [(CM + 4 * MiB, 4 * MiB)])
    assert dev.sanitized_bytes == 2 * BLK + 8 * MiB


def test_sanitize_request_flag_counts_only_the_marked_bytes():
    """A host may release more than was asked (K11 releases a whole tag group, §4.4): only the
    bytes the request marked count, not the whole released entry that touches them."""
    dev = two_regions(heads=1)
    accept(dev, 0, [(0, 8 * MiB)])
    dev.release_capacity(0, 0, [(BLK, 4 * MiB)], sanitize=True)      # marks [2, 6) MiB
    dev.release(0, [(0, 4 * MiB)])                                  # [2, 4) MiB of it
    assert dev.sanitized_bytes == BLK
    dev.release(0, [(4 * MiB, 4 * MiB)])                            # [4, 6) MiB of it
    assert dev.sanitized_bytes == 4 * MiB


def test_sanitize_region_flag_is_per_region():
    """The Sanitize-on-Release flag (§2.1 flags bit 0) of each region decides for its bytes,
    also within one Release DC spanning both regions."""
    dev = Device([Region(0, 64 * MiB), Region(CM, 64 * MiB, sanitize_on_release=True)], heads=1)
    accept(dev, 0, [(0, 8 * MiB)])
    accept(dev, 0, [(CM, 8 * MiB)], region=1)
    dev.release(0, [(CM + BLK, BLK), (0, 4 * MiB), (CM + 6 * MiB, BLK)])
    assert dev.sanitized_bytes == 2 * BLK
    assert [r.sanitize_on_release for r in dev.get_dc_config(0).regions] == [False, True]


# ---------------------------------------------------------------------------------------------
# 3. Mailbox: Get DC Configuration, Get DC Extent List (§2.1, §3.5)
# ---------------------------------------------------------------------------------------------

def test_get_dc_config():
    regions = [Region(i * CM, 64 * MiB, dsmad_handle=i, sanitize_on_release=i == 1) for i in range(3)]
    dev = Device(regions, heads=2, max_extents=10, max_tags=4)
    accept(dev, 1, [(0, BLK), (8 * MiB, BLK)])
    dev.add_capacity(1, 0, [(16 * MiB, BLK)])
    out = dev.get_dc_config(1)
    assert out.available_regions == 3 and out.regions == tuple(r.record() for r in regions)
    assert (out.supported_extents, out.available_extents) == (10, 7)
    assert (out.supported_tags, out.available_tags) == (4, 4)
    assert dev.get_dc_config(0).available_extents == 10
    assert dev.get_dc_config(0, 1, 2).regions == (regions[2].record(),)
    assert dev.get_dc_config(0, 2, 1).regions == tuple(r.record() for r in regions[1:])
    assert dev.get_dc_config(0, 0, 0).regions == ()
    with pytest.raises(MailboxError) as err:
        dev.get_dc_config(0, 8, 3)
    assert err.value.code == ReturnCode.INVALID_INPUT


def extents_device(n):
    """Head 0 has n accepted 2 MiB extents in a 1 GiB region (every other block)."""
    dev = Device([Region(0, 4 * CM)], heads=1)
    accept(dev, 0, [(2 * i * BLK, BLK) for i in range(n)])
    return dev


def test_get_extent_list_paging():
    dev = extents_device(23)
    want = rows(dev.accepted(0))
    for count in (1, 5, 23, 100):
        got, start = [], 0
        while start < 23:
            out = dev.get_extent_list(0, count, start)
            assert out.total_extents == 23 and out.generation == dev.generation(0) == 1
            assert len(out.extents) == min(count, 23 - start)
            got += rows(out.extents)
            start += len(out.extents)
        assert got == want, (got, want)
    assert len(dev.get_extent_list(0, 0, 3).extents) == 0
    assert len(dev.get_extent_list(0, 10, 23).extents) == 0           # start == total: empty
    with pytest.raises(MailboxError) as err:
        dev.get_extent_list(0, 10, 24)                                 # past the end
    assert err.value.code == ReturnCode.INVALID_INPUT


def test_get_extent_list_fits_one_payload():
    dev = extents_device(60)
    room = (MAILBOX_PAYLOAD_SIZE - 16) // 40
    out = dev.get_extent_list(0)
    assert len(out.extents) == room and out.total_extents == 60
    assert len(R.pack_get_dc_extent_list_out(out)) <= MAILBOX_PAYLOAD_SIZE
    assert rows(dev.get_extent_list(0, 1000, room).extents) == rows(dev.accepted(0))[room:]


def test_get_extent_list_reports_tag_and_sequence():
    dev = two_regions(heads=1)
    accept(dev, 0, [(CM + 8 * MiB, BLK), (CM, BLK)], region=1, tag=T1)
    assert rows(dev.get_extent_list(0).extents) == [(CM, BLK, T1, 1), (CM + 8 * MiB, BLK, T1, 0)]


# ---------------------------------------------------------------------------------------------
# 3. mailbox(): the four commands on raw bytes
# ---------------------------------------------------------------------------------------------

def test_mailbox_get_dc_config_bytes():
    dev = two_regions(heads=2, max_extents=9)
    code, out = dev.mailbox(0, Opcode.GET_DC_CONFIG, R.pack_get_dc_config_in(GetDcConfigIn(8, 0)))
    assert code == ReturnCode.SUCCESS and R.unpack_get_dc_config_out(out) == dev.get_dc_config(0)
    code, out = dev.mailbox(0, 0x4800, bytes([1, 1]))
    assert R.unpack_get_dc_config_out(out).regions == (dev.regions[1].record(),)
    # QEMU clips a count larger than the regions there are (the wire allows up to 255)
    code, out = dev.mailbox(0, Opcode.GET_DC_CONFIG, bytes([255, 0]))
    assert code == ReturnCode.SUCCESS and len(R.unpack_get_dc_config_out(out).regions) == 2
    assert dev.mailbox(0, Opcode.GET_DC_CONFIG, bytes([8, 2])) == (ReturnCode.INVALID_INPUT, b"")
    assert dev.mailbox(0, Opcode.GET_DC_CONFIG, bytes([8, 9])) == (ReturnCode.INVALID_INPUT, b"")
    for bad in (b"", b"\x08", b"\x08\x00\x00"):
        assert dev.mailbox(0, Opcode.GET_DC_CONFIG, bad) == (ReturnCode.INVALID_PAYLOAD_LENGTH, b"")


def test_mailbox_get_extent_list_bytes():
    dev = extents_device(7)
    code, out = dev.mailbox(0, Opcode.GET_DC_EXTENT_LIST, R.pack_get_dc_extent_list_in(GetDcExtentListIn(3, 2)))
    assert code == ReturnCode.SUCCESS
    got = R.unpack_get_dc_extent_list_out(out)
    assert got == dev.get_extent_list(0, 3, 2) and got.total_extents == 7 and len(got.extents) == 3
    bad_start = R.pack_get_dc_extent_list_in(GetDcExtentListIn(3, 8))
    assert dev.mailbox(0, Opcode.GET_DC_EXTENT_LIST, bad_start) == (ReturnCode.INVALID_INPUT, b"")
    for bad in (b"", bytes(7), bytes(9)):
        assert dev.mailbox(0, Opcode.GET_DC_EXTENT_LIST, bad) == (ReturnCode.INVALID_PAYLOAD_LENGTH, b"")


def updated(*extents, more=False):
    return R.pack_updated_extent_list(UpdatedExtentList([UpdatedExtent(s, n) for s, n in extents], more=more))


def test_mailbox_add_response_and_release_bytes():
    dev = two_regions(heads=1)
    dev.add_capacity(0, 0, [(0, 4 * MiB), (8 * MiB, BLK)])
    before = state(dev)
    good = updated((0, 4 * MiB), (8 * MiB, BLK))
    for bad in (good[:-1], good + b"\0", good[:7], b"", updated((0, BLK))[:8] + bytes(24) * 2):
        assert dev.mailbox(0, Opcode.ADD_DC_RESPONSE, bad) == (ReturnCode.INVALID_PAYLOAD_LENGTH, b"")
    assert dev.mailbox(0, Opcode.ADD_DC_RESPONSE, updated((MiB, BLK))) == (ReturnCode.INVALID_EXTENT_LIST, b"")
    assert dev.mailbox(0, Opcode.ADD_DC_RESPONSE, updated((16 * MiB, BLK))) == (ReturnCode.INVALID_PA, b"")
    assert state(dev) == before
    assert dev.mailbox(0, Opcode.ADD_DC_RESPONSE, good) == (ReturnCode.SUCCESS, b"")
    assert pairs(dev.accepted(0)) == [(0, 4 * MiB), (8 * MiB, BLK)]

    assert dev.mailbox(0, Opcode.RELEASE_DC, updated()) == (ReturnCode.INVALID_INPUT, b"")
    assert dev.mailbox(0, Opcode.RELEASE_DC, updated((20 * MiB, BLK))) == (ReturnCode.INVALID_PA, b"")
    assert dev.mailbox(0, Opcode.RELEASE_DC, updated((0, BLK))[:-8]) == (ReturnCode.INVALID_PAYLOAD_LENGTH, b"")
    assert dev.mailbox(0, Opcode.RELEASE_DC, updated((0, BLK), more=True)) == (ReturnCode.SUCCESS, b"")
    assert pairs(dev.accepted(0)) == [(BLK, BLK), (8 * MiB, BLK)]
    # non-zero reserved bytes are ignored (strict=False), as QEMU does
    raw = bytearray(updated((BLK, BLK)))
    raw[5], raw[8 + 16] = 0xFF, 0xEE
    assert dev.mailbox(0, Opcode.RELEASE_DC, bytes(raw)) == (ReturnCode.SUCCESS, b"")
    # an empty Add-Response drops the oldest offer
    dev.add_capacity(0, 0, [(30 * MiB, BLK)])
    assert dev.mailbox(0, Opcode.ADD_DC_RESPONSE, updated()) == (ReturnCode.SUCCESS, b"")
    assert dev.pending_offers(0) == []
    dev.check_invariants()


@pytest.mark.parametrize("opcode", [0x4804, 0x4000, 0x5600, 0x5604, 0x5605, 0])
def test_mailbox_unknown_opcode(opcode):
    dev = qmp_device()
    before = state(dev)
    assert dev.mailbox(0, opcode, bytes(8)) == (ReturnCode.UNSUPPORTED, b"")
    assert state(dev) == before


def test_mailbox_bad_head_is_not_a_device_answer():
    with pytest.raises(RequestError):
        qmp_device().mailbox(5, Opcode.GET_DC_CONFIG, bytes([8, 0]))


# ---------------------------------------------------------------------------------------------
# 4. Events (§3.2, §3.3)
# ---------------------------------------------------------------------------------------------

def test_add_events_one_per_extent_more_on_all_but_the_last():
    dev = two_regions(heads=3, max_extents=20, max_tags=3)
    accept(dev, 2, [(0, BLK)])
    dev.take_events(2)
    offer = dev.add_capacity(2, 1, [(CM + 8 * MiB, BLK), (CM, 4 * MiB), (CM + 20 * MiB, BLK)], tag=T1)
    ev = dev.take_events(2)
    assert ev.dtype == DC_EVENT_DTYPE and len(ev) == 3
    assert ev["event_type"].tolist() == [DcEventType.ADD_CAPACITY] * 3
    assert (ev["flags"] & 1).tolist() == [1, 1, 0]
    assert ev["host_id"].tolist() == [2, 2, 2] and ev["region_index"].tolist() == [1, 1, 1]
    assert ev["validity_flags"].tolist() == [1, 1, 1]
    assert rows(ev["extent"]) == rows(offer.extents) == [
        (CM + 8 * MiB, BLK, T1, 0), (CM, 4 * MiB, T1, 1), (CM + 20 * MiB, BLK, T1, 2)]
    assert ev["available_extents"].tolist() == [20 - 4] * 3       # 1 accepted + 3 pending
    assert ev["available_tags"].tolist() == [3] * 3
    assert dev.take_events(0).size == 0 and dev.take_events(1).size == 0     # other heads see nothing
    # the records are valid wire records
    assert len(R.unpack_dc_event_array(R.pack_dc_event_array(ev))) == 3
    # one request, one chain: a second offer closes its own chain
    dev.add_capacity(2, 0, [(8 * MiB, BLK)])
    assert [e["more"] for e in dev.events_view(2)] == [False]


def test_release_events():
    dev = two_regions(heads=2)
    accept(dev, 1, [(0, 4 * MiB), (8 * MiB, BLK)], tag=T1)
    dev.take_events(1)
    dev.release_capacity(1, 0, [(BLK, BLK), (8 * MiB, BLK)])
    dev.release_capacity(1, 0, [(0, BLK)], forced=True)
    ev = dev.take_events(1)
    assert ev["event_type"].tolist() == [DcEventType.RELEASE_CAPACITY] * 2 + [DcEventType.FORCED_CAPACITY_RELEASE]
    assert (ev["flags"] & 1).tolist() == [1, 0, 0]
    assert rows(ev["extent"]) == [(BLK, BLK, T1, 0), (8 * MiB, BLK, T1, 0), (0, BLK, T1, 0)]
    assert ev["host_id"].tolist() == [1, 1, 1] and ev["region_index"].tolist() == [0, 0, 0]
    assert ev["available_extents"].tolist() == [MAX_EXTENTS - 2, MAX_EXTENTS - 2, MAX_EXTENTS - 2]


def pieces_device():
    """Head 0 in the shareable region: T1 [0, 4) and [4, 8) MiB (seq 0, 1), T2 [8, 12) MiB,
    untagged [20, 28) MiB (offsets from the region base)."""
    dev = two_regions(heads=2)
    accept(dev, 0, [(CM, 4 * MiB), (CM + 4 * MiB, 4 * MiB)], region=1, tag=T1)
    accept(dev, 0, [(CM + 8 * MiB, 4 * MiB)], region=1, tag=T2)
    accept(dev, 0, [(CM + 20 * MiB, 8 * MiB)], region=1)
    dev.take_events(0)
    return dev


PIECE_REQUEST = [(CM + 22 * MiB, BLK), (CM + BLK, 8 * MiB)]     # inside one extent; across three
PIECES = [(CM + 22 * MiB, BLK, NULL_UUID, 0),
          (CM + BLK, BLK, T1, 0), (CM + 4 * MiB, 4 * MiB, T1, 1), (CM + 8 * MiB, BLK, T2, 0)]
LEFT = [(CM, BLK, T1, 0), (CM + 10 * MiB, BLK, T2, 0), (CM + 20 * MiB, BLK, NULL_UUID, 0),
        (CM + 24 * MiB, 4 * MiB, NULL_UUID, 0)]


def test_release_capacity_across_extents_one_event_per_piece():
    """§3.2/§3.3: a prescriptive release range spanning several accepted extents gives one
    Release event per extent piece, clipped to the range, each with its own extent's tag and
    sequence number, in request order, More on all but the last; the host can answer with
    exactly those pieces."""
    dev = pieces_device()
    before = state(dev)
    ext = dev.release_capacity(0, 1, PIECE_REQUEST)
    assert rows(ext) == PIECES
    assert [(e["type"], e["start"], e["length"], uuid.UUID(e["tag"]), e["seq"], e["more"])
            for e in dev.events_view(0)] == [("RELEASE_CAPACITY", *p, i < 3) for i, p in enumerate(PIECES)]
    ev = dev.take_events(0)
    assert rows(ev["extent"]) == PIECES and ev["region_index"].tolist() == [1] * 4
    assert state(dev)[:3] == before[:3]                      # nothing released yet
    assert [r[:2] for r in dev.log[-2]["extents"]] == [list(p[:2]) for p in PIECES]
    dev.release(0, pairs(ext))
    assert rows(dev.accepted(0)) == LEFT
    assert dev.capacity(1).accepted == 10 * MiB
    dev.check_invariants()


def test_forced_release_across_extents_takes_back_exactly_the_pieces():
    """A forced prescriptive release spanning several extents takes back exactly the pieces it
    names (one Forced Release event each): the remainders stay accepted with their labels."""
    dev = pieces_device()
    gen = dev.generation(0)
    ext = dev.release_capacity(0, 1, PIECE_REQUEST, forced=True)
    assert rows(ext) == PIECES
    assert [e["type"] for e in dev.events_view(0)] == ["FORCED_CAPACITY_RELEASE"] * 4
    assert rows(dev.accepted(0)) == LEFT
    assert dev.generation(0) == gen + 1
    assert dev.capacity(1) == Capacity(64 * MiB, 54 * MiB, 0, 10 * MiB)
    assert all(dev.holders(s) == [] for s, *_ in PIECES)
    assert mailbox_code(dev.release, 0, [(CM + 4 * MiB, BLK)]) == ReturnCode.INVALID_PA
    dev.check_invariants()
    assert state(Device.replay(log_lines(dev))) == state(dev)


def test_event_log_overflow():
    dev = two_regions(heads=1, event_log_size=4)
    dev.add_capacity(0, 0, [(i * BLK, BLK) for i in range(3)])
    dev.add_capacity(0, 0, [(i * BLK, BLK) for i in range(8, 11)])
    assert len(dev.events_view(0)) == 4 and dev.event_overflow(0) == 2
    # the second chain lost its end: the host never sees More=0 for it
    assert [e["more"] for e in dev.events_view(0)] == [True, True, False, True]
    assert len(dev.take_events(0, 3)) == 3
    dev.add_capacity(0, 0, [(i * BLK, BLK) for i in range(16, 20)])     # room for 3 of 4
    assert len(dev.events_view(0)) == 4 and dev.event_overflow(0) == 3
    dev.take_events(0)
    dev.add_capacity(0, 0, [(30 * MiB, BLK)])
    assert len(dev.events_view(0)) == 1 and dev.event_overflow(0) == 3
    dev.check_invariants()


def test_take_events_limit():
    dev = two_regions(heads=1)
    a = dev.add_capacity(0, 0, [(0, BLK), (4 * MiB, BLK), (8 * MiB, BLK)])
    b = dev.add_capacity(0, 0, [(12 * MiB, BLK), (16 * MiB, BLK)])
    want = rows(a.extents) + rows(b.extents)
    got = []
    for limit in (0, 2, 2, 5):           # cuts the first chain, spans both, then the rest
        ev = dev.take_events(0, limit)
        assert len(ev) == min(limit, 5 - len(got))
        got += rows(ev["extent"])
    assert got == want and len(dev.take_events(0)) == 0
    assert dev.log[-1] == {"op": "take_events", "head": 0, "count": 0}


# ---------------------------------------------------------------------------------------------
# 5. Selection policies (§3.6)
# ---------------------------------------------------------------------------------------------

NB = 32          # blocks in a 64 MiB region


def blocks_of(ext):
    out = []
    for s, n in pairs(ext):
        out += range(s // BLK, (s + n) // BLK)
    return out


def runs(free):
    """Maximal runs of consecutive block numbers, as lengths."""
    out, prev = [], None
    for b in sorted(free):
        if prev is not None and b == prev + 1:
            out[-1] += 1
        else:
            out.append(1)
        prev = b
    return out


@given(seed=st.integers(0, 2**32 - 1),
       taken=st.lists(st.tuples(st.integers(0, NB - 1), st.integers(1, 4), st.booleans()), max_size=10),
       want=st.integers(1, NB), contiguous=st.booleans())
def test_free_and_contiguous_take_free_block_aligned_capacity(seed, taken, want, contiguous):
    dev = Device([Region(CM, NB * BLK)], heads=2, seed=seed)
    held = set()
    for b, n, answer in sorted(taken, key=lambda t: not t[2]):   # head 1: accepted, then pending
        blocks = set(range(b, min(b + n, NB)))
        if not blocks & held:
            offer = dev.add_capacity(1, 0, [(CM + b * BLK, len(blocks) * BLK)])
            if answer:
                dev.add_response(1, pairs(offer.extents))
            held |= blocks
    free = set(range(NB)) - held
    before = state(dev)
    policy = "contiguous" if contiguous else "free"
    if (contiguous and max(runs(free), default=0) < want) or len(free) < want:
        with pytest.raises(RequestError, match="contiguous" if contiguous else "not enough free"):
            dev.add_capacity(0, 0, policy=policy, length=want * BLK)
        assert state(dev) == before
        return
    offer = dev.add_capacity(0, 0, policy=policy, length=want * BLK)
    assert offer.policy == (SelectionPolicy.CONTIGUOUS if contiguous else SelectionPolicy.FREE)
    ext = offer.extents
    assert (ext["start"] % BLK == 0).all() and (ext["length"] % BLK == 0).all() and (ext["length"] > 0).all()
    got = [b - CM // BLK for b in blocks_of(ext)]
    assert len(got) == len(set(got)) == want and set(got) <= free
    assert offer.length == want * BLK
    if contiguous:
        assert len(ext) == 1
    assert dev.capacity(0).free == (len(free) - want) * BLK
    dev.check_invariants()


def fragmented(seed, **kw):
    dev = Device([Region(0, NB * BLK)], heads=2, seed=seed, **kw)
    accept(dev, 1, [(i * 3 * BLK, BLK) for i in range(NB // 3 + 1)])      # free runs of 2 blocks
    return dev


def test_free_selection_is_seeded():
    def choose(seed):
        dev = fragmented(seed)
        return [pairs(dev.add_capacity(0, 0, policy=p, length=2 * BLK).extents) for p in ("free", "contiguous", "free")]

    assert choose(3) == choose(3)
    assert len({json.dumps(choose(s)) for s in range(10)}) > 1


def test_contiguous_needs_one_gap_that_fits():
    dev = fragmented(0)
    assert dev.capacity(0).free >= 8 * BLK
    before = state(dev)
    with pytest.raises(RequestError, match="contiguous free capacity"):
        dev.add_capacity(0, 0, policy="contiguous", length=3 * BLK)
    assert state(dev) == before
    offer = dev.add_capacity(0, 0, policy="free", length=3 * BLK)      # free may split it
    assert len(offer.extents) >= 2
    offer = dev.add_capacity(0, 0, policy="contiguous", length=2 * BLK)
    assert len(offer.extents) == 1 and offer.length == 2 * BLK


def seeded_device(seed):
    """Region 0 fragmented by head 1 (free runs of 2 blocks); head 0 accepted T1 (8 blocks) in the
    shareable region 1, and head 1 has it pending (a seeded split and order)."""
    dev = Device([Region(0, NB * BLK), Region(CM, NB * BLK, shareable=True)], heads=3, seed=seed)
    accept(dev, 1, [(i * 3 * BLK, BLK) for i in range(NB // 3 + 1)])
    accept(dev, 0, [(CM, 8 * BLK)], region=1, tag=T1)
    share(dev, 1, T1, accept_all=False)
    return dev


def seeded_choices(dev):
    """The next seeded choices: free, contiguous, and T1 split and ordered for head 2."""
    return [rows(dev.add_capacity(0, 0, policy="free", length=3 * BLK).extents),
            rows(dev.add_capacity(2, 0, policy="contiguous", length=2 * BLK).extents),
            rows(share(dev, 2, T1, accept_all=False).extents),
            rows(dev.add_capacity(0, 0, policy="free", length=4 * BLK).extents)]


REFUSED_DRAWS = {
    # refusals a seeded request may meet, before or after it drew from the generator
    "free: longer than the region": lambda d: d.add_capacity(0, 0, policy="free", length=NB * BLK + BLK),
    "free: more than is free": lambda d: d.add_capacity(0, 0, policy="free", length=NB * BLK),
    "free: not block aligned": lambda d: d.add_capacity(0, 0, policy="free", length=3 * MiB),
    "free: length 2**64": lambda d: d.add_capacity(0, 0, policy="free", length=2**64),
    "contiguous: no gap fits": lambda d: d.add_capacity(0, 0, policy="contiguous", length=3 * BLK),
    "contiguous: length 0": lambda d: d.add_capacity(0, 0, policy="contiguous", length=0),
    "enable-shared-access: pending again (after the split is drawn)":
        lambda d: d.add_capacity(1, 1, policy="enable-shared-access", tag=T1),
    "enable-shared-access: a private region": lambda d: d.add_capacity(1, 0, policy="enable-shared-access", tag=T1),
    "enable-shared-access: no capacity with the tag": lambda d: d.add_capacity(2, 1, policy="enable-shared-access",
                                                                              tag=T2),
}


@pytest.mark.parametrize("seed", [0, 1, 5])
@pytest.mark.parametrize("refusal", sorted(REFUSED_DRAWS))
def test_refused_requests_draw_nothing_from_the_generator(refusal, seed):
    """A refused free / contiguous / enable-shared-access add draws nothing from the device's
    random generator: the next seeded choices equal those of a device that never saw it."""
    dev, twin = seeded_device(seed), seeded_device(seed)
    before = state(dev)
    with pytest.raises(RequestError):
        REFUSED_DRAWS[refusal](dev)
    assert state(dev) == before
    assert seeded_choices(dev) == seeded_choices(twin)
    assert state(Device.replay(log_lines(dev))) == state(dev)


def test_seeded_choices_depend_on_the_generator():
    """The check above can fail: one draw more changes the next seeded choices for some seed."""
    differ = 0
    for seed in range(6):
        dev, twin = seeded_device(seed), seeded_device(seed)
        dev._rng.random()                                      # white box: one extra draw
        differ += seeded_choices(dev) != seeded_choices(twin)
    assert differ


@pytest.mark.parametrize("policy", ["free", "contiguous"])
@pytest.mark.parametrize("length", [NB * BLK + BLK, 2**63, 2**64 - BLK, 2**64, 2**64 + BLK, 2**70,
                                    np.uint64(2**64 - BLK)],
                         ids=["region + 1 block", "2**63", "2**64 - 1 block", "2**64", "2**64 + 1 block",
                              "2**70", "numpy 2**64 - 1 block"])
def test_length_past_the_region_is_a_request_error(policy, length):
    """free / contiguous with a length past the region length, up to 2**64 and beyond: a
    RequestError (never OverflowError), logged, nothing changed, and it replays as refused."""
    dev = Device([Region(0, NB * BLK)], heads=1)
    before = state(dev)
    with pytest.raises(RequestError, match="not enough free capacity"):
        dev.add_capacity(0, 0, policy=policy, length=length)
    assert state(dev) == before
    assert dev.log[-1]["length"] == int(length) and "error" in dev.log[-1]
    again = Device.replay(log_lines(dev))
    assert again.log == dev.log


def test_free_length_of_2_63_bytes_or_more():
    """free in a region of 2**63 bytes or more, for a length of 2**63 or more."""
    dev = Device([Region(0, 2**63)], heads=1)
    assert dev.add_capacity(0, 0, policy="contiguous", length=2**63).length == 2**63     # passes
    dev = Device([Region(0, 2**63)], heads=1)
    assert dev.add_capacity(0, 0, policy="free", length=2**63).length == 2**63           # OverflowError


def test_free_takes_exactly_the_length_after_a_gap_of_2_63_bytes_or_more():
    """free: the offer is exactly ``length`` bytes, whatever order the seeded choice visits the
    gaps in (here a gap of 2**64 - 512 MiB and one of 254 MiB)."""
    for seed in range(6):
        dev = Device([Region(0, 2**64 - CM)], heads=1, seed=seed)
        dev.add_capacity(0, 0, [(2**64 - 2 * CM, BLK)])
        assert dev.add_capacity(0, 0, policy="free", length=2**62).length == 2**62, seed


def test_enable_shared_access_refusals():
    dev = two_regions(heads=3)
    accept(dev, 0, [(0, BLK)], tag=T1)                       # tagged, but in the private region
    dev.add_capacity(0, 1, [(CM, BLK)], tag=T2)              # pending only
    before = state(dev)
    for head, region, tag, text in [
            (1, 1, None, "needs a tag"),
            (1, 0, T1, "region is not shareable"),
            (1, 1, T1, "no capacity with this tag"),         # T1 is in region 0 only
            (1, 1, T2, "no capacity with this tag"),         # pending is not shared
            (1, 1, uuid.UUID(int=99), "no capacity with this tag"),
            (0, 1, T2, "no capacity with this tag")]:        # a head does not share with itself
        with pytest.raises(RequestError, match=text):
            dev.add_capacity(head, region, policy="enable-shared-access", tag=tag)
        assert state(dev) == before
    dev.add_response(0, [(CM, BLK)])
    offer = dev.add_capacity(1, 1, policy="enable-shared-access", tag=str(T2))
    with pytest.raises(RequestError, match=PENDING):
        dev.add_capacity(1, 1, policy="enable-shared-access", tag=T2)
    dev.add_response(1, pairs(offer.extents))
    with pytest.raises(RequestError, match=ACCESSIBLE):
        dev.add_capacity(1, 1, policy="enable-shared-access", tag=T2)


def share(dev, head, tag, region=1, accept_all=True):
    offer = dev.add_capacity(head, region, policy="enable-shared-access", tag=tag)
    if accept_all:
        dev.add_response(head, pairs(offer.extents))
    return offer


@given(seed=st.integers(0, 2**32 - 1), vary=st.booleans(), use_free=st.booleans(),
       layout=st.lists(st.tuples(st.integers(0, NB - 1), st.integers(1, 6)), min_size=1, max_size=6),
       others=st.lists(st.integers(0, NB - 1), max_size=8))
def test_shared_views_agree(seed, vary, use_free, layout, others):
    """Enable-shared-access: each head gets the same DPA bytes, split and ordered its own way,
    numbered 0..n-1; the views built from every head's extents agree byte for byte (§6.3)."""
    dev = Device([Region(0, CM), Region(CM, NB * BLK, shareable=True)], heads=3, seed=seed, vary_shared=vary)
    held = set()
    for b in others:                                          # head 2 holds untagged blocks
        if b not in held:
            accept(dev, 2, [(CM + b * BLK, BLK)], region=1)
            held.add(b)
    if use_free:
        want = min(sum(n for _, n in layout), NB - len(held))
        assume(want > 0)
        source = dev.add_capacity(0, 1, policy="free", length=want * BLK, tag=T1)
    else:
        request = []
        for b, n in layout:
            blocks = set(range(b, min(b + n, NB)))
            if not blocks & held:
                request.append((CM + b * BLK, len(blocks) * BLK))
                held |= blocks
        assume(request)
        source = dev.add_capacity(0, 1, request, tag=T1)
    assert sorted(r[3] for r in rows(source.extents)) == list(range(len(source.extents)))
    dev.add_response(0, pairs(source.extents))
    offers = [share(dev, 1, T1), share(dev, 2, T1)]
    for offer in offers:
        assert offer.policy == SelectionPolicy.ENABLE_SHARED_ACCESS and offer.tag == T1
        assert sorted(blocks_of(offer.extents)) == sorted(blocks_of(source.extents))
        assert sorted(offer.extents["shared_seq"].tolist()) == list(range(len(offer.extents)))
        assert all(r[2] == T1 for r in rows(offer.extents))
        if not vary:
            by_seq = lambda o: sorted(rows(o.extents), key=lambda r: r[3])      # noqa: E731
            assert rows(offer.extents) == by_seq(source)
    views = [view(tagged(dev, h, T1)) for h in range(3)]
    check = verify_views(views)
    assert check.consistent, check.reason
    assert views[0].size == source.length
    assert dev.capacity(1).accepted == (len(set(others)) + len(blocks_of(source.extents))) * BLK
    dev.check_invariants()
    for b in blocks_of(source.extents):
        assert dev.holders(b * BLK) == [0, 1, 2]


def test_vary_shared_changes_split_and_order():
    splits, orders = set(), set()
    for seed in range(20):
        dev = Device([Region(0, NB * BLK, shareable=True)], heads=2, seed=seed, vary_shared=True)
        accept(dev, 0, [(0, 16 * BLK)], tag=T1)
        offer = share(dev, 1, T1, region=0)
        splits.add(len(offer.extents))
        orders.add(tuple(offer.extents["shared_seq"].tolist()))
        assert verify_views([view(tagged(dev, 0, T1)), view(tagged(dev, 1, T1))])
    assert max(splits) > 1                                        # split at other points
    assert any(list(o) != sorted(o) for o in orders)              # delivered in another order


def test_shared_layout_from_the_head_holding_the_most_of_the_tag():
    """A head that accepted only part of a shared offer is not the layout for the next head:
    head 1 must get head 2's whole layout, not head 0's remnant renumbered."""
    dev = two_regions(heads=3, vary_shared=False)
    accept(dev, 2, [(CM, 4 * MiB), (CM + 24 * MiB, 4 * MiB)], region=1, tag=T1)
    partial = share(dev, 0, T1, accept_all=False)
    dev.add_response(0, [(CM + 24 * MiB, 4 * MiB)])               # head 0 keeps seq 1 only
    assert len(partial.extents) == 2
    offer = share(dev, 1, T1)
    assert sorted(blocks_of(offer.extents)) == sorted(blocks_of(tagged(dev, 2, T1)))
    assert verify_views([view(tagged(dev, 2, T1)), view(tagged(dev, 1, T1))])
    with pytest.raises(SequenceError):
        view(tagged(dev, 0, T1))                                  # head 0's own view has a hole


def test_forced_release_takes_capacity_back_at_once():
    dev = two_regions(heads=2)
    accept(dev, 0, [(0, 8 * MiB)])
    gen = dev.generation(0)
    ext = dev.release_capacity(0, 0, [(BLK, 4 * MiB)], forced=True)
    assert pairs(ext) == [(BLK, 4 * MiB)]
    assert pairs(dev.accepted(0)) == [(0, BLK), (6 * MiB, BLK)]
    assert dev.capacity(0) == Capacity(64 * MiB, 60 * MiB, 0, 4 * MiB) and dev.generation(0) == gen + 1
    assert dev.events_view(0)[-1]["type"] == "FORCED_CAPACITY_RELEASE"
    assert mailbox_code(dev.release, 0, [(BLK, BLK)]) == ReturnCode.INVALID_PA    # already gone
    accept(dev, 1, [(BLK, 4 * MiB)])                                          # free for others
    dev.check_invariants()


def test_forced_release_of_shared_capacity_keeps_other_holders():
    dev = two_regions(heads=2)
    accept(dev, 0, [(CM, 4 * MiB)], region=1, tag=T1)
    share(dev, 1, T1)
    dev.release_capacity(0, 1, policy="tag-based", tag=T1, forced=True)
    assert len(dev.accepted(0)) == 0 and dev.holders(CM) == [1]
    assert dev.capacity(1).accepted == 4 * MiB
    share(dev, 0, T1)                                          # and it can be shared back
    assert verify_views([view(tagged(dev, 0, T1)), view(tagged(dev, 1, T1))])


def test_tag_based_release():
    dev = two_regions(heads=2)
    accept(dev, 0, [(CM, BLK), (CM + 8 * MiB, 4 * MiB)], region=1, tag=T1)
    accept(dev, 0, [(CM + 4 * MiB, BLK)], region=1, tag=T2)
    accept(dev, 0, [(0, BLK)], region=0, tag=T1)                   # same tag, other region
    dev.take_events(0)
    before = state(dev)
    ext = dev.release_capacity(0, 1, policy="tag-based", tag=T1)
    assert rows(ext) == [(CM, BLK, T1, 0), (CM + 8 * MiB, 4 * MiB, T1, 1)]
    assert [(e["type"], e["start"], e["more"]) for e in dev.events_view(0)] == [
        ("RELEASE_CAPACITY", CM, True), ("RELEASE_CAPACITY", CM + 8 * MiB, False)]
    assert state(dev)[:3] == before[:3]                         # nothing released yet
    dev.release(0, pairs(ext))
    assert rows(dev.accepted(0)) == [(0, BLK, T1, 0), (CM + 4 * MiB, BLK, T2, 0)]
    with pytest.raises(RequestError, match="no extent with this tag"):
        dev.release_capacity(0, 1, policy="tag-based", tag=T1)
    dev.release_capacity(0, 0, policy=0, tag=T1, forced=True)      # policy as a number
    assert rows(dev.accepted(0)) == [(CM + 4 * MiB, BLK, T2, 0)]
    with pytest.raises(RequestError, match="no extent with this tag"):
        dev.release_capacity(1, 1, policy="tag-based", tag=T2)     # head 1 holds none


# ---------------------------------------------------------------------------------------------
# 6. Multi-head exclusivity (§5.5)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("answered", [False, True], ids=["pending", "accepted"])
@pytest.mark.parametrize("region", [0, 1], ids=["private", "shareable"])
def test_prescriptive_add_of_another_heads_dpa_refused(answered, region):
    dev = two_regions(heads=3)
    base = dev.regions[region].base
    offer = dev.add_capacity(0, region, [(base + 4 * MiB, 4 * MiB)], tag=T1)
    if answered:
        dev.add_response(0, pairs(offer.extents))
    before = state(dev)
    for rng in [(base + 6 * MiB, 4 * MiB), (base, 6 * MiB), (base + 4 * MiB, BLK)]:
        with pytest.raises(RequestError, match=HELD):
            dev.add_capacity(1, region, [rng])
        assert state(dev) == before
    dev.add_capacity(1, region, [(base + 8 * MiB, BLK)])          # the neighbour is free
    if answered:
        dev.release(0, pairs(offer.extents))
    else:
        dev.add_response(0, [])
    dev.add_capacity(2, region, [(base + 4 * MiB, 4 * MiB)])      # free again
    dev.check_invariants()


def test_free_never_takes_another_heads_dpa():
    dev = Device([Region(0, 8 * BLK)], heads=3, seed=1)
    accept(dev, 0, [(0, 3 * BLK)])
    dev.add_capacity(1, 0, [(4 * BLK, 2 * BLK)])
    offer = dev.add_capacity(2, 0, policy="free", length=3 * BLK)
    assert sorted(blocks_of(offer.extents)) == [3, 6, 7]
    with pytest.raises(RequestError, match="not enough free"):
        dev.add_capacity(0, 0, policy="free", length=BLK)


# ---------------------------------------------------------------------------------------------
# 7. Log and replay
# ---------------------------------------------------------------------------------------------

def busy_device():
    """A device after a bit of everything, refusals included."""
    dev = Device([Region(0, 64 * MiB), Region(CM, 64 * MiB, shareable=True, sanitize_on_release=True)],
                 heads=3, seed=11, event_log_size=6, max_extents=40)
    a = dev.add_capacity(0, 1, policy="free", length=12 * MiB, tag=T1)
    dev.add_response(0, pairs(a.extents))
    share(dev, 1, T1)
    b = dev.add_capacity(2, 0, policy="contiguous", length=8 * MiB)
    dev.add_response(2, [(int(b.extents["start"][0]), BLK)])
    dev.add_capacity(1, 0, [(40 * MiB, 4 * MiB), (50 * MiB, BLK)], tag=T2)
    for bad in (lambda: dev.add_capacity(1, 0, [(42 * MiB, BLK)]),
                lambda: dev.add_capacity(0, 0, [(41 * MiB, BLK)]),
                lambda: dev.add_capacity(0, 0, [(-BLK, BLK)]),
                lambda: dev.add_capacity(0, 0, policy="free", length=np.int64(3 * MiB)),
                lambda: dev.release_capacity(2, 1, policy="tag-based", tag=T2),
                lambda: dev.add_response(1, [(1 << 40, BLK)]),
                lambda: dev.release(0, [])):
        with pytest.raises((RequestError, MailboxError)):
            bad()
    dev.take_events(1, 2)
    dev.release_capacity(1, 1, policy="tag-based", tag=T1)
    dev.release(1, pairs(tagged(dev, 1, T1)))
    dev.release_capacity(0, 1, [(int(a.extents["start"][0]), BLK)], forced=True, sanitize=True)
    dev.add_capacity(0, 0, policy="free", length=np.int64(4 * MiB))
    dev.take_events(0)
    return dev


def log_lines(dev):
    buf = io.StringIO()
    dev.write_log(buf)
    return buf.getvalue().splitlines()


def test_replay_reproduces_the_state():
    dev = busy_device()
    lines = log_lines(dev)
    assert json.loads(lines[0])["op"] == "device" and len(lines) == len(dev.log)
    again = Device.replay(lines)
    assert state(again) == state(dev)
    assert again.log == json.loads("[" + ",".join(lines) + "]")
    assert again.config() == dev.config()
    again.check_invariants()
    # blank lines are ignored, and the replayed device goes on like the original
    again = Device.replay(iter([lines[0], "", *lines[1:], "   "]))
    for d in (dev, again):
        d.add_capacity(2, 1, policy="free", length=6 * MiB)
    assert state(again) == state(dev)


def line_of(lines, op, **match):
    for i, line in enumerate(lines):
        e = json.loads(line)
        if e["op"] == op and all(e.get(k) == v for k, v in match.items()):
            return i
    raise AssertionError(f"no {op} line")


def corrupt(lines, i, change):
    e = json.loads(lines[i])
    change(e)
    return lines[:i] + [json.dumps(e)] + lines[i + 1:]


CORRUPTIONS = {
    "bad JSON": lambda ls: (ls[:3] + ["{not json"] + ls[4:], 4, "not a log entry"),
    "not an object": lambda ls: (ls[:3] + ["[1, 2]"] + ls[4:], 4, "not a log entry"),
    "no op": lambda ls: (ls[:3] + ['{"head": 0}'] + ls[4:], 4, "not a log entry"),
    "unknown op": lambda ls: (corrupt(ls, 4, lambda e: e.update(op="teleport")), 5, "unknown operation"),
    "altered offer": lambda ls: (
        corrupt(ls, line_of(ls, "add_capacity", policy="FREE"), lambda e: e["extents"][0].__setitem__(0, 0)),
        line_of(ls, "add_capacity", policy="FREE") + 1, "replaying add_capacity"),
    "altered status": lambda ls: (
        corrupt(ls, line_of(ls, "add_response", status="SUCCESS"), lambda e: e.update(status="INVALID_PA")),
        line_of(ls, "add_response", status="SUCCESS") + 1, "replaying add_response"),
    "altered error text": lambda ls: (
        corrupt(ls, line_of(ls, "add_capacity", error=PENDING), lambda e: e.update(error=ACCESSIBLE)),
        line_of(ls, "add_capacity", error=PENDING) + 1, "replaying add_capacity"),
    "altered event count": lambda ls: (
        corrupt(ls, line_of(ls, "take_events"), lambda e: e.update(count=e["count"] + 1000)),
        line_of(ls, "take_events") + 1, "replaying take_events"),
    "missing field": lambda ls: (
        corrupt(ls, line_of(ls, "release"), lambda e: e.pop("extents")), line_of(ls, "release") + 1, "extents"),
    "missing device entry": lambda ls: (ls[1:], 1, "does not start with a device entry"),
    "second device entry": lambda ls: (ls[:5] + [ls[0]] + ls[5:], 6, "second device entry"),
    "unknown version": lambda ls: (corrupt(ls, 0, lambda e: e.update(version=99)), 1, "unknown log version"),
    "bad configuration": lambda ls: (corrupt(ls, 0, lambda e: e["config"].update(heads=0)), 1, "heads"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_replay_names_the_corrupt_line(name):
    lines = log_lines(busy_device())
    bad, lineno, text = CORRUPTIONS[name](lines)
    with pytest.raises(CorruptDataError, match=rf"log line {lineno}\b.*{text}"):
        Device.replay(bad)


@pytest.mark.parametrize("call", [
    lambda d: d.add_capacity(0, 0, [(-BLK, BLK)]),
    lambda d: d.add_capacity(0, 0, [(2**64, BLK)]),
    lambda d: d.release_capacity(0, 0, [(0, -BLK)]),
    lambda d: d.add_capacity(0, 0, policy="contiguous", length=np.int64(3 * MiB)),
], ids=["negative start", "start past 2**64", "negative length", "numpy length"])
def test_replay_of_requests_refused_for_their_values(call):
    """A request refused for its values is logged with them, so it replays as refused."""
    dev = two_regions(heads=1)
    with pytest.raises(RequestError):
        call(dev)
    again = Device.replay(log_lines(dev))
    assert again.log == dev.log and state(again) == state(dev)


def test_replay_of_an_empty_log():
    with pytest.raises(CorruptDataError, match="empty log"):
        Device.replay(["", "  "])


def test_replay_of_add_responses_in_more_payloads():
    """§3.4 More in the log: each payload is one line with its More flag; the replay joins them
    as the device did (an answered chain, a refused one), and a chain still open at the end
    of the log is open on the replayed device too."""
    dev, first, second = more_device()
    for part in PAYLOADS[:-1]:
        dev.add_response(0, part, more=True)
    assert dev.mailbox(0, Opcode.ADD_DC_RESPONSE, updated(*PAYLOADS[-1])) == (ReturnCode.SUCCESS, b"")
    assert send(dev, [SECOND[:1], [(60 * MiB, BLK)]], wire=True) == [ReturnCode.SUCCESS, ReturnCode.INVALID_PA]
    dev.add_response(0, SECOND[:1], more=True)                 # left open
    lines = log_lines(dev)
    logged = [json.loads(line) for line in lines if json.loads(line)["op"] == "add_response"]
    assert [(e.get("more", False), e["status"]) for e in logged] == [
        (True, "SUCCESS"), (True, "SUCCESS"), (False, "SUCCESS"),
        (True, "SUCCESS"), (False, "INVALID_PA"), (True, "SUCCESS")]
    assert logged[0]["extents"] == [list(e) for e in PAYLOADS[0]]
    again = Device.replay(lines)
    assert state(again) == state(dev) and again.log == dev.log
    for d in (dev, again):                                      # closing the open chain
        d.add_response(0, SECOND[1:])
    assert pairs(again.accepted(0)) == FIVE + SECOND
    assert state(again) == state(dev)
    # a changed More flag no longer replays the same
    i = next(k for k, line in enumerate(lines) if json.loads(line).get("more"))
    bad = corrupt(lines, i, lambda e: e.pop("more"))
    with pytest.raises(CorruptDataError, match=r"log line \d+: replaying add_response"):
        Device.replay(bad)


# ---------------------------------------------------------------------------------------------
# 8. The state machine
# ---------------------------------------------------------------------------------------------

M_REGIONS = (Region(0, 16 * BLK), Region(CM, 16 * BLK, shareable=True))
M_HEADS = 3
M_MAX_EXTENTS = 6


class DeviceMachine(RuleBasedStateMachine):
    """One device, three heads, a private and a shareable region of 16 blocks each.

    The model is plain Python: per head, the accepted extents as (start, length, tag, seq)
    and the FIFO of offers; which head holds which 2 MiB block is recomputed from them.  It
    predicts every refusal (QEMU's texts and order, mailbox return codes), the events each
    head will read, and the generation numbers; the device must agree after every step.
    """

    def __init__(self):
        super().__init__()
        self.dev = None

    @initialize(seed=st.integers(0, 2**32 - 1), vary=st.booleans())
    def setup(self, seed, vary):
        self.dev = Device(M_REGIONS, heads=M_HEADS, seed=seed, vary_shared=vary, max_extents=M_MAX_EXTENTS)
        self.acc = [[] for _ in range(M_HEADS)]          # [(start, length, tag, seq)] by start
        self.offers = [deque() for _ in range(M_HEADS)]  # (offer id, region, [(start, length, tag, seq)])
        self.events = [deque() for _ in range(M_HEADS)]  # expected event records
        self.gen = [0] * M_HEADS
        self.tags = {}          # tag -> region
        self.canon = {}         # tag (shareable region) -> the blocks its allocator accepted
        self.first_offer = {}   # tag -> the allocating offer's id
        self.sources = {}       # (head, tag) -> ids of the offers the head's extents of tag came from

    # ---------------------------------------------------------------- model helpers

    @staticmethod
    def blocks(s, n):
        return set(range(s // BLK, (s + n) // BLK))

    def acc_blocks(self, h):
        return set().union(*(self.blocks(s, n) for s, n, _, _ in self.acc[h]))

    def pend_blocks(self, h):
        return set().union(*(self.blocks(s, n) for _, _, ext in self.offers[h] for s, n, _, _ in ext))

    def held_by(self, h):
        return self.acc_blocks(h) | self.pend_blocks(h)

    def tracked(self, h):
        return len(self.acc[h]) + sum(len(ext) for _, _, ext in self.offers[h])

    def tag_blocks(self, h, tag, region):
        reg = M_REGIONS[region]
        return set().union(*(self.blocks(s, n) for s, n, t, _ in self.acc[h]
                             if t == tag and reg.base <= s < reg.end))

    def qmp_error(self, h, region, request, add):
        """QEMU's checks (§5.2), one extent at a time, then dcdmap's multi-head rule."""
        reg = M_REGIONS[region]
        seen = set()
        for s, n in request:
            if s < reg.base:
                return END
            if n == 0:
                return ZERO
            if (s - reg.base) % BLK or n % BLK:
                return ALIGN
            if s - reg.base + n > reg.length:
                return END
            b = self.blocks(s, n)
            if b & seen:
                return DUP
            seen |= b
            if add and b & self.acc_blocks(h):
                return ACCESSIBLE
            if b & self.pend_blocks(h):
                return PENDING if add else REL_PENDING
            if not add and not b <= self.acc_blocks(h):
                return REL_NONE
        if add and seen & set().union(*(self.held_by(o) for o in range(M_HEADS) if o != h)):
            return HELD
        return None

    def queue_events(self, h, kind, region, exts):
        avail = max(0, M_MAX_EXTENTS - self.tracked(h))      # offers may exceed the limit
        for i, (s, n, t, q) in enumerate(exts):
            self.events[h].append((int(kind), h, region, i < len(exts) - 1, s, n, t, q, avail))

    @staticmethod
    def cut_from(extents, ranges):
        """Remove byte ranges from extents [(start, length, tag, seq)] (splitting them)."""
        out = []
        for s, n, t, q in extents:
            pieces = [(s, s + n)]
            for a, ln in ranges:
                b = a + ln
                pieces = [p for lo, hi in pieces for p in ((lo, min(hi, a)), (max(lo, b), hi)) if p[0] < p[1]]
            out += [(lo, hi - lo, t, q) for lo, hi in pieces]
        return sorted(out)

    def cut(self, h, ranges):
        """Remove byte ranges from the head's accepted extents: (the extents, growth in count)."""
        out = self.cut_from(self.acc[h], ranges)
        return out, len(out) - len(self.acc[h])

    def pieces(self, h, ranges):
        """The accepted extents each range meets, clipped to it, with their labels, in request
        order then DPA order (one Release event each)."""
        return [(max(s, a), min(s + n, a + ln) - max(s, a), t, q)
                for a, ln in ranges for s, n, t, q in self.acc[h] if s < a + ln and a < s + n]

    def release_fits(self, h, ranges):
        """Release DC's extent-count check as QEMU's cxl_dc_extent_release_dry_run makes it:
        each entry cut from the list the earlier entries left, the count checked after every
        extent piece."""
        cur, total, qemu = list(self.acc[h]), self.tracked(h), True
        for a, ln in ranges:
            for s, n, _, _ in [e for e in cur if e[0] < a + ln and a < e[0] + e[1]]:
                total += -1 + (s < a) + (s + n > a + ln)
                qemu &= total <= M_MAX_EXTENTS
            cur = self.cut_from(cur, [(a, ln)])
        return qemu

    def drop_sources(self, h):
        for (hh, t) in list(self.sources):
            if hh == h and not any(e[2] == t for e in self.acc[h]):
                del self.sources[(hh, t)]

    def new_tag(self, region):
        t = uuid.UUID(int=len(self.tags) + 1)
        self.tags[t] = region
        return t

    def record_offer(self, h, region, offer, tag):
        exts = rows(offer.extents)
        self.offers[h].append((offer.id, region, exts))
        self.queue_events(h, DcEventType.ADD_CAPACITY, region, exts)
        if tag is not None and tag not in self.first_offer:
            self.first_offer[tag] = offer.id

    def expect_refusal(self, text, call):
        with pytest.raises(RequestError) as err:
            call()
        assert str(err.value) == text

    # ---------------------------------------------------------------- FM side: offers

    @rule(h=st.integers(0, M_HEADS - 1), region=st.sampled_from([0, 1, 1]),
          request=st.lists(st.tuples(st.sampled_from(["ok"] * 6 + ["zero", "misaligned", "outside"]),
                                     st.integers(0, 15), st.integers(1, 4)), min_size=1, max_size=3),
          tagged_=st.sampled_from([True, True, False]))
    def offer_prescriptive(self, h, region, request, tagged_):
        if len(self.offers[h]) >= 3:
            return
        base = M_REGIONS[region].base
        req = []
        for kind, b, n in request:
            req.append({"ok": (base + b * BLK, min(n, 16 - b) * BLK),
                        "zero": (base + b * BLK, 0),
                        "misaligned": (base + b * BLK + MiB, n * BLK),
                        "outside": (base + (17 - n) * BLK, n * BLK) if region == 0 or b % 2
                        else (base - BLK, n * BLK)}[kind])
        text = self.qmp_error(h, region, req, add=True)
        tag = uuid.UUID(int=10**6 + len(self.tags)) if tagged_ else None
        if text:
            self.expect_refusal(text, lambda: self.dev.add_capacity(h, region, req, tag=tag))
            return
        if tag is not None:
            tag = self.new_tag(region)
        offer = self.dev.add_capacity(h, region, req, tag=tag)
        seqs = list(range(len(req))) if M_REGIONS[region].shareable else [0] * len(req)
        assert rows(offer.extents) == [(s, n, tag or NULL_UUID, q) for (s, n), q in zip(req, seqs)]
        self.record_offer(h, region, offer, tag)

    @rule(h=st.integers(0, M_HEADS - 1), region=st.sampled_from([0, 1, 1]), nblocks=st.integers(1, 8),
          contiguous=st.booleans(), tagged_=st.sampled_from([True, True, False]))
    def offer_free(self, h, region, nblocks, contiguous, tagged_):
        if len(self.offers[h]) >= 3:
            return
        reg = M_REGIONS[region]
        first = reg.base // BLK
        held = set().union(*(self.held_by(o) for o in range(M_HEADS)))
        free = set(range(first, first + reg.length // BLK)) - held
        policy = "contiguous" if contiguous else "free"
        if (contiguous and max(runs(free), default=0) < nblocks) or len(free) < nblocks:
            self.expect_refusal(
                f"no {nblocks * BLK:#x} bytes of contiguous free capacity in the region" if contiguous
                else f"not enough free capacity in the region for {nblocks * BLK:#x} bytes",
                lambda: self.dev.add_capacity(h, region, policy=policy, length=nblocks * BLK))
            return
        tag = self.new_tag(region) if tagged_ else None
        offer = self.dev.add_capacity(h, region, policy=policy, length=nblocks * BLK, tag=tag)
        got = blocks_of(offer.extents)
        assert len(got) == nblocks and set(got) <= free
        assert (offer.extents["start"] % BLK == 0).all() and (offer.extents["length"] > 0).all()
        assert len(offer.extents) == 1 or not contiguous
        seqs = list(range(len(offer.extents))) if reg.shareable else [0] * len(offer.extents)
        assert [r[2:] for r in rows(offer.extents)] == [(tag or NULL_UUID, q) for q in seqs]
        self.record_offer(h, region, offer, tag)

    @precondition(lambda self: self.tags)
    @rule(region=st.sampled_from([1] * 8 + [0]), data=st.data())
    def offer_shared(self, region, data):
        # mostly a tag some head holds in the shareable region, offered to a head that has none
        # of it; sometimes any tag or none, to any head
        live = sorted(t for t in self.tags if any(self.tag_blocks(o, t, 1) for o in range(M_HEADS)))
        tag = data.draw(st.sampled_from(live * 4 + sorted(self.tags) + [None]), label="tag")
        lacking = [h for h in range(M_HEADS) if tag is not None and not self.tag_blocks(h, tag, 1)
                   and not any(e[2] == tag for _, _, ext in self.offers[h] for e in ext)]
        if lacking and data.draw(st.sampled_from([True] * 4 + [False]), label="lacking"):
            h = data.draw(st.sampled_from(lacking), label="head")
        else:
            h = data.draw(st.integers(0, M_HEADS - 1), label="head")
        if len(self.offers[h]) >= 3:
            return
        if tag is None:
            self.expect_refusal("enable-shared-access needs a tag",
                                lambda: self.dev.add_capacity(h, 1, policy="enable-shared-access"))
            return
        call = lambda: self.dev.add_capacity(h, region, policy="enable-shared-access", tag=tag)  # noqa: E731
        if region == 0:
            return self.expect_refusal("region is not shareable", call)
        # the source: the other head holding the most of the tag, the lowest on a tie
        sizes = [(-len(self.tag_blocks(o, tag, 1)), o) for o in range(M_HEADS) if o != h]
        size, src = min(sizes)
        if size == 0:
            return self.expect_refusal("no capacity with this tag to share", call)
        layout = set(self.tag_blocks(src, tag, 1))
        if layout & self.acc_blocks(h):
            return self.expect_refusal(ACCESSIBLE, call)
        if layout & self.pend_blocks(h):
            return self.expect_refusal(PENDING, call)
        offer = call()
        exts = rows(offer.extents)
        assert sorted(blocks_of(offer.extents)) == sorted(layout)
        assert sorted(q for _, _, _, q in exts) == list(range(len(exts)))
        assert all(t == tag for _, _, t, _ in exts)
        # the bytes in layout order are the source's bytes in (sequence, DPA) order
        mine = [b for s, n, _, _ in sorted(exts, key=lambda e: e[3]) for b in sorted(self.blocks(s, n))]
        theirs = [b for s, n, _, _ in sorted((e for e in self.acc[src] if e[2] == tag and e[0] >= CM),
                                             key=lambda e: (e[3], e[0]))
                  for b in sorted(self.blocks(s, n))]
        assert mine == theirs
        self.record_offer(h, 1, offer, None)

    # ---------------------------------------------------------------- host side: responses

    @precondition(lambda self: any(self.offers))
    @rule(mode=st.sampled_from(["all"] * 5 + ["some"] * 3 + ["none"] * 2), data=st.data())
    def respond(self, mode, data):
        """The oldest offer of a head: accepted whole, in part, or not at all."""
        h = data.draw(st.sampled_from([h for h in range(M_HEADS) if self.offers[h]]), label="head")
        self.answer(h, mode, data)

    @precondition(lambda self: any(self.offers))
    @rule(data=st.data())
    def respond_in_full(self, data):
        """A host that takes everything it is offered (most hosts, most of the time)."""
        h = data.draw(st.sampled_from([h for h in range(M_HEADS) if self.offers[h]]), label="head")
        self.answer(h, "all", data)

    def answer(self, h, mode, data):
        oid, region, exts = self.offers[h][0]
        resp = []
        for s, n, t, q in exts:
            if mode == "all":
                resp.append((s, n))
                continue
            if mode == "none" or not data.draw(st.booleans(), label="take"):
                continue
            nb = n // BLK
            a = data.draw(st.integers(0, nb - 1), label="from")
            b = data.draw(st.integers(a + 1, nb), label="to")
            if b - a >= 2 and data.draw(st.booleans(), label="two pieces"):
                m = data.draw(st.integers(a + 1, b - 1), label="cut")
                gap = data.draw(st.integers(0, min(1, b - m - 1)), label="gap")
                resp += [(s + a * BLK, (m - a) * BLK), (s + (m + gap) * BLK, (b - m - gap) * BLK)]
            else:
                resp.append((s + a * BLK, (b - a) * BLK))
        if resp and len(resp) + self.tracked(h) > M_MAX_EXTENTS:
            assert mailbox_code(self.dev.add_response, h, resp) == ReturnCode.RESOURCES_EXHAUSTED
            return
        if data.draw(st.booleans(), label="as bytes"):
            # in one payload, or in several with More (§3.4) as the kernel splits it
            size = data.draw(st.sampled_from([MAILBOX_PAYLOAD_SIZE, 8 + 24, 8 + 2 * 24]), label="payload size")
            for raw in split_updated_extent_list([UpdatedExtent(s, n) for s, n in resp], size):
                assert self.dev.mailbox(h, Opcode.ADD_DC_RESPONSE, raw) == (ReturnCode.SUCCESS, b"")
        else:
            self.dev.add_response(h, resp)
        self.offers[h].popleft()
        tags_before = {e[2] for e in self.acc[h]}
        for s, n in resp:
            t, q = next((t, q) for os, on, t, q in exts if os <= s < os + on)
            self.acc[h].append((s, n, t, q))
            if t != NULL_UUID:
                self.sources.setdefault((h, t), set()).add(oid)
        self.acc[h].sort()
        if resp:
            self.gen[h] += 1
        tag = exts[0][2]
        if self.first_offer.get(tag) == oid and region == 1:      # the allocator answered
            assert tag not in tags_before
            self.canon[tag] = self.tag_blocks(h, tag, 1)

    @rule(h=st.integers(0, M_HEADS - 1), kind=st.sampled_from(["reorder", "later offer", "misaligned",
                                                                  "nothing pending", "release"]),
          data=st.data())
    def misbehave(self, h, kind, data):
        """A refused Add-Response or Release DC changes nothing (the invariants compare the whole
        state)."""
        if kind == "release":
            return self.release_badly(h, data)
        offers = self.offers[h]
        if kind == "reorder" and offers and len(offers[0][2]) >= 2:
            resp, code = [tuple(e[:2]) for e in offers[0][2][1::-1]], ReturnCode.INVALID_EXTENT_LIST
        elif kind == "later offer" and len(offers) >= 2:
            resp, code = [tuple(offers[1][2][0][:2])], ReturnCode.INVALID_PA
        elif kind == "misaligned" and offers:
            s = offers[0][2][0][0]
            resp, code = [(s, MiB)], ReturnCode.INVALID_EXTENT_LIST        # half a block
        elif kind == "nothing pending" and not offers:
            resp, code = [(0, BLK)], ReturnCode.INVALID_PA
        else:
            return
        if len(resp) + self.tracked(h) > M_MAX_EXTENTS:
            code = ReturnCode.RESOURCES_EXHAUSTED
        assert mailbox_code(self.dev.add_response, h, resp) == code

    # ---------------------------------------------------------------- releases

    def pick_range(self, h, data):
        """A block-aligned range inside the head's accepted extents, maybe across neighbours."""
        i = data.draw(st.integers(0, len(self.acc[h]) - 1), label="extent")
        s, n = self.acc[h][i][:2]
        end = s + n
        for t in self.acc[h][i + 1:]:              # extend over touching neighbours
            if t[0] == end and data.draw(st.booleans(), label="span"):
                end += t[1]
            else:
                break
        nb = (end - s) // BLK
        a = data.draw(st.integers(0, nb - 1), label="from")
        b = data.draw(st.integers(a + 1, nb), label="to")
        return s + a * BLK, (b - a) * BLK

    def host_release(self, h, ranges):
        cut, growth = self.cut(h, ranges)
        fits = self.release_fits(h, ranges)
        if not fits:
            assert mailbox_code(self.dev.release, h, ranges) == ReturnCode.RESOURCES_EXHAUSTED
            return False
        self.dev.release(h, ranges)
        self.acc[h] = cut
        self.gen[h] += 1
        self.drop_sources(h)
        return True

    @precondition(lambda self: any(self.acc))
    @rule(mode=st.sampled_from(["host", "fm", "forced"]), data=st.data())
    def release_prescriptive(self, mode, data):
        h = data.draw(st.sampled_from([h for h in range(M_HEADS) if self.acc[h]]), label="head")
        ranges = [self.pick_range(h, data)]
        if data.draw(st.booleans(), label="second range"):
            other = self.pick_range(h, data)
            if not self.blocks(*other) & self.blocks(*ranges[0]):
                ranges.append(other)
        region = 0 if ranges[0][0] < CM else 1
        if mode == "host" or any((r[0] < CM) != (region == 0) for r in ranges):
            self.host_release(h, ranges)
            return
        ext = self.dev.release_capacity(h, region, ranges, forced=mode == "forced")
        want = self.pieces(h, ranges)                # one event per extent piece
        assert rows(ext) == want
        if mode == "forced":
            self.acc[h] = self.cut(h, ranges)[0]
            self.gen[h] += 1
            self.drop_sources(h)
            self.queue_events(h, DcEventType.FORCED_CAPACITY_RELEASE, region, want)
        else:
            self.queue_events(h, DcEventType.RELEASE_CAPACITY, region, want)
            if data.draw(st.booleans(), label="host complies"):
                self.host_release(h, ranges)

    @precondition(lambda self: self.tags)
    @rule(forced=st.booleans(), comply=st.booleans(), data=st.data())
    def release_tag(self, forced, comply, data):
        # mostly a tag the head holds, sometimes any
        held = sorted({(h, e[2]) for h in range(M_HEADS) for e in self.acc[h] if e[2] != NULL_UUID})
        if not held or not data.draw(st.sampled_from([True] * 4 + [False]), label="held"):
            held = [(h, t) for h in range(M_HEADS) for t in sorted(self.tags)]
        h, tag = data.draw(st.sampled_from(held), label="head and tag")
        region = self.tags[tag]
        reg = M_REGIONS[region]
        want = [e for e in self.acc[h] if e[2] == tag and reg.base <= e[0] < reg.end]
        call = lambda: self.dev.release_capacity(h, region, policy="tag-based", tag=tag, forced=forced)  # noqa
        if not want:
            return self.expect_refusal("no extent with this tag to release", call)
        ext = call()
        assert rows(ext) == want
        ranges = [e[:2] for e in want]
        if forced:
            self.acc[h] = self.cut(h, ranges)[0]
            self.gen[h] += 1
            self.drop_sources(h)
            self.queue_events(h, DcEventType.FORCED_CAPACITY_RELEASE, region, want)
        else:
            self.queue_events(h, DcEventType.RELEASE_CAPACITY, region, want)
            if comply:          # whole extents; still refused while the head is over its limit
                self.host_release(h, ranges)

    def release_badly(self, h, data):
        free = sorted(set(range(16)) - self.acc_blocks(h))
        if data.draw(st.booleans(), label="empty") or not free:
            assert mailbox_code(self.dev.release, h, []) == ReturnCode.INVALID_INPUT
        else:
            b = data.draw(st.sampled_from(free), label="block")
            assert mailbox_code(self.dev.release, h, [(b * BLK, BLK)]) == ReturnCode.INVALID_PA

    # ---------------------------------------------------------------- events

    @rule(h=st.integers(0, M_HEADS - 1), limit=st.one_of(st.none(), st.integers(0, 6)))
    def take_events(self, h, limit):
        ev = self.dev.take_events(h, limit)
        n = len(self.events[h]) if limit is None else min(limit, len(self.events[h]))
        want = [self.events[h].popleft() for _ in range(n)]
        got = [(int(e["event_type"]), int(e["host_id"]), int(e["region_index"]), bool(e["flags"] & 1),
                *x, int(e["available_extents"])) for e, x in zip(ev, rows(ev["extent"]))]
        assert got == want, (got, want)

    # ---------------------------------------------------------------- invariants

    @invariant()
    def consistent(self):
        if self.dev is None:
            return
        dev = self.dev
        dev.check_invariants()
        holders = {}
        accepted = set()
        for h in range(M_HEADS):
            for b in self.held_by(h):
                holders.setdefault(b, []).append(h)
            accepted |= self.acc_blocks(h)
        for r, reg in enumerate(M_REGIONS):
            cap = dev.capacity(r)
            first = reg.base // BLK
            mine = range(first, first + reg.length // BLK)
            held = sum(1 for b in mine if b in holders)
            acc = sum(1 for b in mine if b in accepted)
            assert cap.free + cap.pending + cap.accepted == cap.total == reg.length
            assert cap == Capacity(reg.length, (len(mine) - held) * BLK, (held - acc) * BLK, acc * BLK)
            for b in mine:
                assert dev.holders(b * BLK) == holders.get(b, [])
        for h in range(M_HEADS):
            assert rows(dev.accepted(h)) == self.acc[h]
            assert [(o.id, rows(o.extents)) for o in dev.pending_offers(h)] == \
                [(oid, exts) for oid, _, exts in self.offers[h]]
            assert dev.generation(h) == self.gen[h]
            assert len(dev.events_view(h)) == len(self.events[h])
        assert dev.capacity() == Capacity(*(sum(dev.capacity(r)[i] for r in range(2)) for i in range(4)))

    @invariant()
    def shared_views_agree(self):
        """The hosts that fully accepted a shared tag agree on its layout (§6.3).

        "Fully accepted": the head holds exactly the blocks the tag's allocator accepted, all
        from one offer (the allocation itself or one enable-shared-access offer), numbered
        0..n-1.  A head that took part of an offer, gave part back, or pieced the tag together
        from several offers has no whole view to compare (the device keeps no per-tag layout,
        so sequence numbers from different offers are not comparable).
        """
        if self.dev is None:
            return
        for tag, canon in self.canon.items():
            if not canon:
                continue
            views = []
            for h in range(M_HEADS):
                if self.tag_blocks(h, tag, 1) != canon or len(self.sources.get((h, tag), ())) != 1:
                    continue
                try:
                    views.append(view(tagged(self.dev, h, tag)))
                except SequenceError:       # accepted in pieces: a hole or a repeat (§4.3 refuses it)
                    continue
            if len(views) >= 2:
                check = verify_views(views)
                assert check.consistent, check.reason

    def teardown(self):
        if self.dev is not None and len(self.dev.log) < 400:
            again = Device.replay(log_lines(self.dev))
            assert state(again) == state(self.dev)


# A step drives the device, the model and every invariant: a third of the profile's examples
# keeps the default run to a few seconds (the ci profile still runs 200 machines of 100 steps).
DeviceMachine.TestCase.settings = settings(max_examples=max(10, settings.default.max_examples // 3))
TestDeviceMachine = DeviceMachine.TestCase


# ============================================================================ FM API on the wire (§3.6)

def test_3_6_fm_initiate_dc_add_and_release_on_the_wire():
    """§3.6: Initiate DC Add (5604h) / Release (5605h) payloads drive add_capacity /
    release_capacity; refusals are INVALID_INPUT, short payloads INVALID_PAYLOAD_LENGTH, and
    every exchange is in the log and replays."""
    dev = Device([R0], heads=2)
    tag = uuid.UUID(int=5)
    add = R.pack_fm_dc_add(R.FmDcAdd(1, R.SelectionPolicy.PRESCRIPTIVE, 0, tag=tag,
                                     extents=[R.DcExtent(0, BLK), R.DcExtent(4 * MiB, BLK)]))
    assert dev.fm_mailbox(R.Opcode.FM_INITIATE_DC_ADD, add) == (ReturnCode.SUCCESS, b"")
    assert [(e["start"], e["more"], e["tag"]) for e in dev.events_view(1)] == \
        [(0, True, str(tag)), (4 * MiB, False, str(tag))]
    before = state(dev)
    assert dev.fm_mailbox(R.Opcode.FM_INITIATE_DC_ADD, add)[0] == ReturnCode.INVALID_INPUT
    assert dev.log[-1]["error"] == "cannot add DPA again while still pending"
    assert dev.fm_mailbox(R.Opcode.FM_INITIATE_DC_ADD, add[:10])[0] == ReturnCode.INVALID_PAYLOAD_LENGTH
    assert dev.fm_mailbox(R.Opcode.FM_GET_DCD_INFO, b"")[0] == ReturnCode.UNSUPPORTED
    assert state(dev) == before
    dev.add_response(1, [(0, BLK), (4 * MiB, BLK)])
    rel = R.pack_fm_dc_release(R.FmDcRelease(1, R.RemovalPolicy.TAG_BASED, 0, tag=tag, forced_removal=True))
    assert dev.fm_mailbox(R.Opcode.FM_INITIATE_DC_RELEASE, rel)[0] == ReturnCode.SUCCESS
    assert dev.capacity(0).free == dev.capacity(0).total
    buf = io.StringIO()
    dev.write_log(buf)
    again = Device.replay(buf.getvalue().splitlines())
    assert state(again) == state(dev) and again.log == dev.log


@pytest.mark.parametrize("seed", range(12))
def test_release_each_is_one_release_dc_per_extent(seed):
    """§4.4/§5.3: release_each(head, extents) = one Release DC per extent, in order: the same
    codes, state and log as calling release() for each, on the batch path (whole accepted
    extents) and on the one-by-one path (parts, repeats, unaccepted ranges, a limit)."""
    rng = np.random.default_rng(seed)
    blocks = sorted(rng.choice(64, 24, replace=False).tolist())
    ext = [(b * BLK, BLK) for b in blocks]

    def fresh():
        dev = Device([R0], max_extents=60)         # the Add-Response counts pending twice
        dev.add_capacity(0, 0, ext)
        dev.add_response(0, ext)
        return dev

    chosen = [ext[i] for i in rng.permutation(len(ext))[: int(rng.integers(1, 12))]]
    if seed % 3 == 1:
        chosen.append(chosen[0])                                  # released twice: INVALID_PA
    if seed % 3 == 2:
        chosen.insert(0, (chosen[0][0], 64 * 1024))               # a part of an extent
        chosen.append((70 * BLK, BLK))                            # outside: INVALID_PA
    a, b = fresh(), fresh()
    codes = a.release_each(0, chosen)
    want = []
    for s, n in chosen:
        try:
            b.release(0, [(s, n)])
            want.append(ReturnCode.SUCCESS)
        except MailboxError as e:
            want.append(e.code)
    assert codes == want
    assert state(a) == state(b) and a.log == b.log and a.generation(0) == b.generation(0)
    a.check_invariants()
