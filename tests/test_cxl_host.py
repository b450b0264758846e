"""dcdmap.cxl.host: the Linux (DCD v11) host model against reference §3.3–3.7 and §4.

* More chains (§3.3, §3.7): staging, one Add-Response per chain, the pending limit, the add
  timeout, responses split over mailbox payloads.
* §4.1 the add pipeline: grouping, the stable sort, shareability from the partition, each
  group gate (4a–4d) and each per-extent gate, host sequence numbers, the response order.
* §4.3 DAX claims, §4.4 releases, §4.5 the region lifecycle, §4.6 the older versions.
* Hypothesis: the pipeline against a plain-Python oracle of §4.1 fed malformed chains, the
  assembled view independent of arrival order, and state machines of one multi-head device
  with one host per head (capacity conservation, host = device once settled, no partially
  surfaced group, every shared tag the same memory on every host).

Every scenario test names the rule it checks in its name or the first line of its docstring.
Malformed event records are injected with :meth:`Host.handle_event` after the device made an
offer with ``add_capacity`` (its own records discarded), so that the Add-Response has a
pending offer to match.
"""
from __future__ import annotations

import errno as E
import uuid
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from dcdmap import ExtentMap, verify_views
from dcdmap.cxl import DC_EVENT_DTYPE, NULL_UUID, DcEvent, DcEventType, DcExtent, Device, Host, Region
from dcdmap.cxl import records as R
from dcdmap.cxl.host import ADD_TIMEOUT_TICKS, MAX_PENDING_EXTENTS, PMD_SIZE, RESCAN_RETRIES
from dcdmap.errors import ConfigurationError, HostError, RequestError

MiB = 1 << 20
KiB = 1 << 10
HPA = 1 << 40                      # Host's default hpa_base
TA, TB, TC, TD = (uuid.UUID(int=0xA0 + i) for i in range(4))
ADD = DcEventType.ADD_CAPACITY
RELEASE = DcEventType.RELEASE_CAPACITY


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def region(base: int = 0, length: int = 256 * MiB, **kw: Any) -> Region:
    return Region(base=base, length=length, **kw)


def device(*regions: Region, **kw: Any) -> Device:
    return Device(list(regions) or [region()], **kw)


def shared_device(**kw: Any) -> Device:
    """One shareable partition (the DSMAS says so, §2.3)."""
    return device(region(shareable=True, dsmad_handle=1), **kw)


def records(rows: Sequence[Tuple], kind: int = ADD, *, close: bool = True, head: int = 0) -> np.ndarray:
    """DC event records, one per row (start, length[, tag[, seq]]), More on all but the last
    (on all of them when ``close`` is False)."""
    ext = R.records_to_array([DcExtent(r[0], r[1], r[2] if len(r) > 2 and r[2] is not None else NULL_UUID,
                                       r[3] if len(r) > 3 else 0) for r in rows], DcExtent)
    ev = np.zeros(len(rows), DC_EVENT_DTYPE)
    ev["event_type"] = kind
    ev["validity_flags"] = 1
    ev["host_id"] = head
    ev["flags"] = 1
    if close and len(ev):
        ev["flags"][-1] = 0
    ev["extent"] = ext
    return ev


def feed(host: Host, rows: Sequence[Tuple], kind: int = ADD, *, close: bool = True) -> None:
    for ev in records(rows, kind, close=close, head=host.head):
        host.handle_event(ev)


def inject(dev: Device, host: Host, offered: Sequence[Tuple[int, int]], rows: Sequence[Tuple], *,
           region_index: int = 0, tag: Any = None) -> None:
    """The device offers ``offered``; its records are replaced by ``rows``, fed to the host."""
    dev.add_capacity(host.head, region_index, offered, tag=tag)
    dev.take_events(host.head)
    feed(host, rows)


def responses(dev: Device, head: int = 0) -> List[Dict[str, Any]]:
    """The device's log of Add-Responses from a head: {"extents": [[start, length]...], "status"}."""
    return [e for e in dev.log if e["op"] == "add_response" and e["head"] == head]


def last_response(dev: Device, head: int = 0) -> List[Tuple[int, int]]:
    r = responses(dev, head)[-1]
    assert r["status"] == "SUCCESS", r
    return [tuple(x) for x in r["extents"]]


def held(host: Host) -> List[Tuple[int, int]]:
    return [tuple(x) for x in host.extents().tolist()]


def accepted(dev: Device, head: int = 0) -> List[Tuple[int, int]]:
    a = dev.accepted(head)
    return list(zip(a["start"].tolist(), a["length"].tolist()))


def notes(host: Host, event: str) -> List[Dict[str, Any]]:
    return [e for e in host.log if e["event"] == event]


def group_rows(g) -> List[Tuple[int, int, int]]:
    """(start, length, host seq) of a group, in seq order."""
    x = g.extents
    return list(zip(x["start"].tolist(), x["length"].tolist(), x["shared_seq"].tolist()))


def host_errno(excinfo) -> str:
    return E.errorcode[excinfo.value.errno]


def all_free(dev: Device) -> bool:
    c = dev.capacity()
    return c.free == c.total and c.pending == 0 and c.accepted == 0


# ---------------------------------------------------------------------------------------------
# Construction
# ---------------------------------------------------------------------------------------------

def test_defaults_follow_the_kernel_constants():
    """§3.7/§4.1 4d/§3.5: PMD alignment, 100 pending extents, 20 s timeout, 10 rereads."""
    assert (PMD_SIZE, MAX_PENDING_EXTENTS, ADD_TIMEOUT_TICKS, RESCAN_RETRIES) == (2 * MiB, 100, 20_000, 10)
    host = Host(device())
    assert (host.alignment, host.max_pending, host.add_timeout, host.version) == (2 * MiB, 100, 20_000, "v11")
    assert host.decoder == (0, 256 * MiB) and host.groups == [] and host.staged == 0


@pytest.mark.parametrize("kw", [dict(version="v12"), dict(alignment=3 * MiB), dict(alignment=32),
                                dict(max_pending=0), dict(add_timeout=-1), dict(payload_size=31),
                                dict(decoder_length=0), dict(decoder_length=512 * MiB)])
def test_bad_host_parameters_are_configuration_errors(kw):
    """§2.2/§4.6: a host configuration the rules cannot apply to is refused at construction."""
    with pytest.raises(ConfigurationError):
        Host(device(), **kw)


def test_handle_event_takes_a_dc_event_object_too():
    """§3.2: one record per extent, as a DC_EVENT_DTYPE row or a DcEvent."""
    dev = device()
    host = Host(dev)
    dev.add_capacity(0, 0, [(0, 2 * MiB), (4 * MiB, 2 * MiB)])
    for ev in R.array_to_records(dev.take_events(0)):
        assert isinstance(ev, DcEvent)
        host.handle_event(ev)
    assert held(host) == accepted(dev) == [(0, 2 * MiB), (4 * MiB, 2 * MiB)]


# ---------------------------------------------------------------------------------------------
# §3.3 / §3.7: More chains
# ---------------------------------------------------------------------------------------------

def test_3_3_records_are_staged_while_more_is_set():
    """§3.3: Add records wait while More=1; More=0 closes the chain: ONE Add-Response."""
    dev = device()
    host = Host(dev)
    offered = [(0, 2 * MiB), (8 * MiB, 4 * MiB), (20 * MiB, 2 * MiB)]
    dev.add_capacity(0, 0, offered, tag=TA)
    host.poll(limit=2)
    assert host.staged == 2 and host.groups == [] and held(host) == []
    assert notes(host, "add_response") == [] and responses(dev) == []
    assert len(dev.pending_offers(0)) == 1 and dev.capacity().pending == 8 * MiB
    host.poll()
    assert host.staged == 0
    assert len(notes(host, "add_response")) == 1 and len(responses(dev)) == 1
    assert last_response(dev) == offered == accepted(dev) == held(host)
    assert dev.pending_offers(0) == [] and dev.capacity().accepted == 8 * MiB
    assert [len(g.extents) for g in host.groups] == [3]


def test_3_3_chain_fed_record_by_record():
    """§3.3: handle_event stages each More=1 record; the More=0 record processes them all."""
    dev = device()
    host = Host(dev)
    offered = [(0, 2 * MiB), (4 * MiB, 2 * MiB), (8 * MiB, 2 * MiB)]
    dev.add_capacity(0, 0, offered)
    for i, ev in enumerate(dev.take_events(0)):
        assert host.staged == i and responses(dev) == []
        host.handle_event(ev)
    assert host.staged == 0 and last_response(dev) == offered
    assert [len(g.extents) for g in host.groups] == [1, 1, 1]     # untagged: a group each


def test_3_3_two_chains_two_responses_in_fifo_order():
    """§3.3/§5.3: each chain answers the oldest pending offer, one response per chain."""
    dev = device()
    host = Host(dev)
    dev.add_capacity(0, 0, [(0, 2 * MiB), (4 * MiB, 2 * MiB)], tag=TA)
    dev.add_capacity(0, 0, [(16 * MiB, 2 * MiB)], tag=TB)
    host.poll()
    assert [r["extents"] for r in responses(dev)] == [[[0, 2 * MiB], [4 * MiB, 2 * MiB]], [[16 * MiB, 2 * MiB]]]
    assert all(r["status"] == "SUCCESS" for r in responses(dev))
    assert [g.tag for g in host.groups] == [TA, TB]


def test_3_7_chain_of_exactly_max_pending_is_processed():
    """§3.7 CXL_DC_MAX_PENDING_EXTENTS: max_pending records in one chain are fine."""
    dev = device()
    host = Host(dev, max_pending=3)
    offered = [(4 * i * MiB, 2 * MiB) for i in range(3)]
    dev.add_capacity(0, 0, offered, tag=TA)
    host.poll()
    assert notes(host, "chain_overflow") == [] and last_response(dev) == offered == held(host)


def test_3_7_chain_over_max_pending_is_dropped_and_the_rest_discarded():
    """§3.7 CXL_DC_MAX_PENDING_EXTENTS: an over-long chain gets an empty Add-Response; the rest of
    that chain is discarded; the next chain is handled normally."""
    dev = device()
    host = Host(dev, max_pending=3)
    dev.add_capacity(0, 0, [(4 * i * MiB, 2 * MiB) for i in range(6)], tag=TA)
    dev.add_capacity(0, 0, [(64 * MiB, 2 * MiB), (68 * MiB, 2 * MiB)], tag=TB)
    host.poll(limit=5)                       # the overflow hits at the 4th record
    assert len(notes(host, "chain_overflow")) == 1 and host.staged == 0
    assert responses(dev)[-1] == {**responses(dev)[-1], "extents": [], "status": "SUCCESS"}
    assert host.groups == [] and len(dev.pending_offers(0)) == 1    # only TB's offer is left
    host.poll()                              # record 6 (More=0) is discarded, then TB's chain
    assert len(responses(dev)) == 2
    assert last_response(dev) == [(64 * MiB, 2 * MiB), (68 * MiB, 2 * MiB)] == held(host)
    assert [g.tag for g in host.groups] == [TB]
    assert dev.capacity().accepted == 4 * MiB and dev.capacity().pending == 0


def test_3_7_overflow_on_the_closing_record_discards_nothing_more():
    """§3.7: a chain of max_pending + 1 overflows on its last record; nothing is left to discard."""
    dev = device()
    host = Host(dev, max_pending=2)
    dev.add_capacity(0, 0, [(0, 2 * MiB), (4 * MiB, 2 * MiB), (8 * MiB, 2 * MiB)])
    dev.add_capacity(0, 0, [(32 * MiB, 2 * MiB)])
    host.poll()
    assert len(notes(host, "chain_overflow")) == 1
    assert [r["extents"] for r in responses(dev)] == [[], [[32 * MiB, 2 * MiB]]]
    assert held(host) == accepted(dev) == [(32 * MiB, 2 * MiB)]


def test_3_7_add_timeout_drops_the_staged_chain():
    """§3.7 CXL_DC_ADD_TIMEOUT: an unterminated chain is dropped after add_timeout ticks with an
    empty Add-Response (the device's offer is rejected: its capacity is free again)."""
    dev = device()
    host = Host(dev, add_timeout=100)
    dev.add_capacity(0, 0, [(0, 2 * MiB), (4 * MiB, 2 * MiB), (8 * MiB, 2 * MiB)], tag=TA)
    host.poll(now=10, limit=2)
    assert host.staged == 2 and dev.capacity().pending == 6 * MiB
    host.tick(109)
    assert host.staged == 2 and notes(host, "add_timeout") == []
    host.tick(110)
    assert host.staged == 0 and notes(host, "add_timeout")[0]["dropped"] == 2
    assert responses(dev)[-1]["extents"] == [] and responses(dev)[-1]["status"] == "SUCCESS"
    assert dev.pending_offers(0) == [] and all_free(dev) and host.groups == []


def test_3_7_add_timeout_with_handle_event_and_poll():
    """§3.7: the timeout is applied by poll() too, at the tick it is given."""
    dev = device()
    host = Host(dev, add_timeout=5)
    dev.add_capacity(0, 0, [(0, 2 * MiB), (4 * MiB, 2 * MiB)])
    dev.take_events(0)
    feed(host, [(0, 2 * MiB)], close=False)
    assert host.staged == 1
    host.poll(now=4)
    assert host.staged == 1
    host.poll(now=5)
    assert host.staged == 0 and len(notes(host, "add_timeout")) == 1
    assert all_free(dev) and dev.pending_offers(0) == []
    # a later chain starts its own clock
    dev.add_capacity(0, 0, [(16 * MiB, 2 * MiB)])
    host.poll(now=100)
    assert held(host) == accepted(dev) == [(16 * MiB, 2 * MiB)]


def test_3_4_add_response_split_over_payloads_on_the_wire():
    """§3.4: a response longer than payload_size is split; More on all but the last payload."""
    dev = device()
    host = Host(dev, payload_size=8 + 2 * 24)            # two updated extents per payload
    offered = [(4 * i * MiB, 2 * MiB) for i in range(5)]
    dev.add_capacity(0, 0, offered, tag=TA)
    sent: List[bytes] = []
    real = dev.mailbox

    def spy(head, opcode, payload=b""):
        if opcode == R.Opcode.ADD_DC_RESPONSE:
            sent.append(bytes(payload))
        return real(head, opcode, payload)

    dev.mailbox = spy                                    # type: ignore[method-assign]
    host.poll()
    assert len(sent) == 3 and all(len(p) <= 56 for p in sent)
    parts = [R.unpack_updated_extent_list(p) for p in sent]
    assert [p.more for p in parts] == [True, True, False]
    assert [len(p.extents) for p in parts] == [2, 2, 1]
    joined = R.join_updated_extent_lists(sent)
    assert list(zip(joined.extents["start"].tolist(), joined.extents["length"].tolist())) == offered


def test_3_4_split_add_response_is_accepted_whole_by_the_device():
    """§3.4: the device must take a More-chained Add-Response as one response."""
    dev = device()
    host = Host(dev, payload_size=8 + 2 * 24)
    offered = [(4 * i * MiB, 2 * MiB) for i in range(5)]
    dev.add_capacity(0, 0, offered, tag=TA)
    host.poll()
    assert all(e["status"] == "SUCCESS" for e in notes(host, "add_response"))
    assert accepted(dev) == offered == held(host)
    assert dev.capacity().accepted == 10 * MiB and dev.pending_offers(0) == []


# ---------------------------------------------------------------------------------------------
# §4.1 steps 1–3: grouping, sorting, shareability
# ---------------------------------------------------------------------------------------------

def test_4_1_step1_groups_by_tag_in_order_of_first_arrival():
    """§4.1 1: all extents of a tag form one group, arrival order kept; untagged extents are
    groups of their own."""
    dev = device()
    host = Host(dev)
    rows = [(0, 2 * MiB, TA), (4 * MiB, 2 * MiB, TB), (8 * MiB, 2 * MiB, TA), (12 * MiB, 2 * MiB),
            (16 * MiB, 2 * MiB, TB), (20 * MiB, 2 * MiB)]
    inject(dev, host, [r[:2] for r in rows], rows)
    assert [g.tag for g in host.groups] == [TA, TB, NULL_UUID, NULL_UUID]
    assert [e["tag"] for e in notes(host, "group_online")] == [str(TA), str(TB), str(NULL_UUID), str(NULL_UUID)]
    ga, gb, n1, n2 = host.groups
    assert group_rows(ga) == [(0, 2 * MiB, 0), (8 * MiB, 2 * MiB, 1)]
    assert group_rows(gb) == [(4 * MiB, 2 * MiB, 0), (16 * MiB, 2 * MiB, 1)]
    assert group_rows(n1) == [(12 * MiB, 2 * MiB, 0)] and group_rows(n2) == [(20 * MiB, 2 * MiB, 0)]
    assert last_response(dev) == [r[:2] for r in rows]


def test_4_1_step2_stable_sort_by_sequence_number():
    """§4.1 2: a group is sorted by shared_extn_seq; the view follows that order."""
    dev = shared_device()
    host = Host(dev)
    rows = [(40 * MiB, 2 * MiB, TA, 2), (0, 4 * MiB, TA, 0), (20 * MiB, 2 * MiB, TA, 1)]
    inject(dev, host, [r[:2] for r in rows], rows, tag=TA)
    (g,) = host.groups
    assert group_rows(g) == [(0, 4 * MiB, 0), (20 * MiB, 2 * MiB, 1), (40 * MiB, 2 * MiB, 2)]
    v = host.view(TA)
    assert v.translate(0) == HPA and v.translate(4 * MiB) == HPA + 20 * MiB
    assert v.translate(6 * MiB + 64) == HPA + 40 * MiB + 64


def test_4_1_step2_sort_is_stable_when_every_seq_is_zero():
    """§4.1 2: non-shareable: all seqs 0, so the sort keeps arrival order (host seq 0, 1, 2)."""
    dev = device()
    host = Host(dev)
    rows = [(40 * MiB, 2 * MiB, TA), (0, 4 * MiB, TA), (20 * MiB, 2 * MiB, TA)]
    inject(dev, host, [r[:2] for r in rows], rows, tag=TA)
    assert group_rows(host.group(TA)) == [(40 * MiB, 2 * MiB, 0), (0, 4 * MiB, 1), (20 * MiB, 2 * MiB, 2)]
    assert host.view(TA).translate(0) == HPA + 40 * MiB


@pytest.mark.parametrize("shareable", [True, False])
def test_4_1_step3_shareability_comes_from_the_partition_dsmas(shareable):
    """§4.1 3 / §2.3: the group is shared iff the partition's DSMAS says sharable (K11), not
    because of the seq values."""
    dev = device(region(shareable=shareable, dsmad_handle=7))
    host = Host(dev)
    assert host.partitions[0].shareable is shareable
    dev.add_capacity(0, 0, [(8 * MiB, 2 * MiB), (0, 2 * MiB)], tag=TA)
    host.poll()
    g = host.group(TA)
    assert g.shareable is shareable
    # shared: device seq 0, 1 in offer order; not shared: all seq 0, host seq = arrival
    assert group_rows(g) == [(8 * MiB, 2 * MiB, 0), (0, 2 * MiB, 1)]
    # a seq of 1 on a non-shareable partition is refused; on a shareable one it is the layout
    inject(dev, host, [(32 * MiB, 2 * MiB), (36 * MiB, 2 * MiB)],
           [(32 * MiB, 2 * MiB, TB, 1), (36 * MiB, 2 * MiB, TB, 0)])
    if shareable:
        assert group_rows(host.group(TB)) == [(36 * MiB, 2 * MiB, 0), (32 * MiB, 2 * MiB, 1)]
    else:
        assert [e["rule"] for e in notes(host, "extent_refused")] == \
            ["§4.1 5 sequence number on a non-shareable partition"]
        assert group_rows(host.group(TB)) == [(36 * MiB, 2 * MiB, 0)]


def test_4_1_step3_shareability_of_the_first_extent_partition_with_two_partitions():
    """§4.1 3: the first (lowest-seq) extent's partition decides; each partition has its DSMAS."""
    dev = device(region(0, 256 * MiB, shareable=False, dsmad_handle=1),
                 region(256 * MiB, 256 * MiB, shareable=True, dsmad_handle=2))
    host = Host(dev)
    assert [p.shareable for p in host.partitions] == [False, True]


# ---------------------------------------------------------------------------------------------
# §4.1 step 4: group gates
# ---------------------------------------------------------------------------------------------

def test_4_1_4a_a_later_chain_reusing_a_live_tag_is_dropped():
    """§4.1 4a: a tag already live drops the whole group (EEXIST); the device gets it back."""
    dev = device()
    host = Host(dev)
    dev.add_capacity(0, 0, [(0, 2 * MiB)], tag=TA)
    host.poll()
    dev.add_capacity(0, 0, [(8 * MiB, 2 * MiB), (12 * MiB, 2 * MiB)], tag=TA)
    host.poll()
    (refused,) = notes(host, "group_refused")
    assert refused["rule"] == "§4.1 4a tag already live" and refused["errno"] == "EEXIST"
    assert refused["extents"] == [[8 * MiB, 2 * MiB], [12 * MiB, 2 * MiB]]
    assert responses(dev)[-1]["extents"] == []
    assert group_rows(host.group(TA)) == [(0, 2 * MiB, 0)] and held(host) == accepted(dev) == [(0, 2 * MiB)]
    assert dev.capacity().accepted == 2 * MiB and dev.capacity().pending == 0


def test_4_1_4a_drops_only_that_group_of_the_chain():
    """§4.1 4a: other groups of the same chain survive; the response lists only them."""
    dev = device()
    host = Host(dev)
    dev.add_capacity(0, 0, [(0, 2 * MiB)], tag=TA)
    host.poll()
    rows = [(8 * MiB, 2 * MiB, TB), (12 * MiB, 2 * MiB, TA), (16 * MiB, 2 * MiB, TB), (20 * MiB, 2 * MiB)]
    inject(dev, host, [r[:2] for r in rows], rows)
    assert [e["rule"] for e in notes(host, "group_refused")] == ["§4.1 4a tag already live"]
    assert last_response(dev) == [(8 * MiB, 2 * MiB), (16 * MiB, 2 * MiB), (20 * MiB, 2 * MiB)]
    assert [g.tag for g in host.groups] == [TA, TB, NULL_UUID]
    assert accepted(dev) == held(host)


def test_4_1_4a_tag_usable_again_once_released():
    """§4.1 4a: only a LIVE tag blocks; after its release the tag can be offered again."""
    dev = device()
    host = Host(dev)
    dev.add_capacity(0, 0, [(0, 2 * MiB)], tag=TA)
    host.poll()
    dev.release_capacity(0, 0, policy="tag-based", tag=TA)
    host.poll()
    dev.add_capacity(0, 0, [(8 * MiB, 2 * MiB)], tag=TA)
    host.poll()
    assert notes(host, "group_refused") == []
    assert group_rows(host.group(TA)) == [(8 * MiB, 2 * MiB, 0)]


@pytest.mark.parametrize("seqs,why", [((0, 2), "gap"), ((0, 0), "duplicate"), ((1, 2), "not starting at 0"),
                                      ((2, 1), "not starting at 0, reversed"), ((0, 1, 3), "gap at the end")])
def test_4_1_4b_sequence_integrity_on_a_shareable_partition(seqs, why):
    """§4.1 4b: sorted seqs must be exactly 0..n-1; otherwise the whole group is dropped (EINVAL)."""
    dev = shared_device()
    host = Host(dev)
    rows = [(8 * i * MiB, 2 * MiB, TA, q) for i, q in enumerate(seqs)]
    rows.insert(1, (100 * MiB, 2 * MiB, TB, 0))
    inject(dev, host, [r[:2] for r in rows], rows)
    (refused,) = notes(host, "group_refused")
    assert refused["rule"] == "§4.1 4b sequence numbers are not 0..n-1" and refused["errno"] == "EINVAL"
    assert refused["tag"] == str(TA) and len(refused["extents"]) == len(seqs)
    assert last_response(dev) == [(100 * MiB, 2 * MiB)] == held(host)
    assert [g.tag for g in host.groups] == [TB]


def test_4_1_4b_does_not_apply_to_a_non_shareable_partition():
    """§4.1 4b is for sharable partitions only; there a non-zero seq is a per-extent failure."""
    dev = device()
    host = Host(dev)
    rows = [(0, 2 * MiB, TA, 0), (8 * MiB, 2 * MiB, TA, 0)]    # duplicate seq 0 is fine here
    inject(dev, host, [r[:2] for r in rows], rows)
    assert notes(host, "group_refused") == [] and last_response(dev) == [r[:2] for r in rows]


def test_4_1_4c_a_tagged_group_must_lie_in_one_partition():
    """§4.1 4c: partition equality across two shareable partitions; the whole group is dropped."""
    dev = device(region(0, 256 * MiB, shareable=True, dsmad_handle=1),
                 region(256 * MiB, 256 * MiB, shareable=True, dsmad_handle=2))
    host = Host(dev)
    rows = [(0, 2 * MiB, TB, 0), (4 * MiB, 2 * MiB, TA, 0), (256 * MiB, 2 * MiB, TA, 1)]
    inject(dev, host, [(0, 2 * MiB), (4 * MiB, 2 * MiB)], rows)
    (refused,) = notes(host, "group_refused")
    assert refused["rule"] == "§4.1 4c extents in more than one partition" and refused["tag"] == str(TA)
    assert refused["extents"] == [[4 * MiB, 2 * MiB], [256 * MiB, 2 * MiB]]
    assert last_response(dev) == [(0, 2 * MiB)] == held(host)
    assert dev.capacity(0).accepted == 2 * MiB and dev.capacity(0).pending == 0


def test_4_1_4d_alignment_to_the_default_pmd_size():
    """§4.1 4d: every start and length a multiple of 2 MiB, else the group is dropped."""
    dev = device(region(block_size=1 * MiB))
    host = Host(dev)
    rows = [(1 * MiB, 2 * MiB, TA), (8 * MiB, 2 * MiB, TA),       # start not aligned
            (16 * MiB, 3 * MiB, TB),                              # length not aligned
            (32 * MiB, 2 * MiB, TC), (36 * MiB, 4 * MiB, TC)]     # fine
    inject(dev, host, [r[:2] for r in rows], rows)
    refused = notes(host, "group_refused")
    assert [(e["tag"], e["rule"]) for e in refused] == \
        [(str(TA), "§4.1 4d start or length not aligned to 0x200000")] + \
        [(str(TB), "§4.1 4d start or length not aligned to 0x200000")]
    assert last_response(dev) == [(32 * MiB, 2 * MiB), (36 * MiB, 4 * MiB)] == held(host)
    assert dev.capacity().accepted == 6 * MiB and dev.capacity().pending == 0


@pytest.mark.parametrize("alignment,ok,bad", [(64 * KiB, (0, 64 * KiB), (96 * KiB, 64 * KiB)),
                                              (4 * MiB, (4 * MiB, 4 * MiB), (8 * MiB, 2 * MiB))])
def test_4_1_4d_alignment_with_a_custom_alignment(alignment, ok, bad):
    """§4.1 4d: the gate uses Host(alignment=...)."""
    dev = device(region(block_size=32 * KiB))
    host = Host(dev, alignment=alignment)
    rows = [(*bad, TA), (*ok, TB)]
    inject(dev, host, [bad, ok], rows)
    assert [e["tag"] for e in notes(host, "group_refused")] == [str(TA)]
    assert last_response(dev) == [ok] == held(host)


# ---------------------------------------------------------------------------------------------
# §4.1 step 5: per-extent gates
# ---------------------------------------------------------------------------------------------

def _refused(host: Host) -> List[Tuple[int, int, str, str]]:
    return [(e["start"], e["length"], e["rule"], e["errno"]) for e in notes(host, "extent_refused")]


def test_4_1_5_extent_outside_a_dc_partition():
    """§4.1 5: the range must lie inside a DC partition (below, across the end, in a gap): ENXIO."""
    dev = device(region(256 * MiB, 64 * MiB), region(512 * MiB, 64 * MiB, dsmad_handle=1))
    host = Host(dev)
    rows = [(0, 2 * MiB),                          # below the first partition
            (318 * MiB, 4 * MiB, TA),              # crosses the end of partition 0
            (256 * MiB, 2 * MiB, TA),
            (400 * MiB, 2 * MiB),                  # between the partitions
            (258 * MiB, 2 * MiB)]
    inject(dev, host, [(256 * MiB, 2 * MiB), (258 * MiB, 2 * MiB)], rows)
    rule = "§4.1 5 not inside a DC partition"
    assert _refused(host) == [(0, 2 * MiB, rule, "ENXIO"), (318 * MiB, 4 * MiB, rule, "ENXIO"),
                              (400 * MiB, 2 * MiB, rule, "ENXIO")]
    assert last_response(dev) == [(256 * MiB, 2 * MiB), (258 * MiB, 2 * MiB)] == held(host)
    # the tagged group keeps its extent: a hole at host seq 0 (arrival order), so no view
    g = host.group(TA)
    assert group_rows(g) == [(256 * MiB, 2 * MiB, 1)] and g.view is None


def test_4_1_5_shareable_partition_needs_a_tag():
    """§4.1 5: an untagged extent on a sharable partition is refused (EINVAL)."""
    dev = shared_device()
    host = Host(dev)
    rows = [(0, 2 * MiB), (8 * MiB, 2 * MiB, TA, 0)]
    inject(dev, host, [r[:2] for r in rows], rows)
    assert _refused(host) == [(0, 2 * MiB, "§4.1 5 shareable partition needs a tag", "EINVAL")]
    assert last_response(dev) == [(8 * MiB, 2 * MiB)] == held(host)


def test_4_1_5_non_shareable_partition_needs_seq_zero():
    """§4.1 5: a non-zero seq on a non-sharable partition is refused (EINVAL)."""
    dev = device()
    host = Host(dev)
    rows = [(0, 2 * MiB, None, 3), (8 * MiB, 2 * MiB, TA, 0), (16 * MiB, 2 * MiB, TA, 1)]
    inject(dev, host, [r[:2] for r in rows], rows)
    rule = "§4.1 5 sequence number on a non-shareable partition"
    assert _refused(host) == [(0, 2 * MiB, rule, "EINVAL"), (16 * MiB, 2 * MiB, rule, "EINVAL")]
    assert last_response(dev) == [(8 * MiB, 2 * MiB)] == held(host)


def test_4_1_5_no_region_refuses_every_extent():
    """§4.1 5: without a CXL region (DAX region) nothing can be accepted: empty response."""
    dev = device()
    host = Host(dev, create_region=False)
    dev.add_capacity(0, 0, [(0, 2 * MiB), (8 * MiB, 2 * MiB)], tag=TA)
    host.poll()
    assert [r[2] for r in _refused(host)] == ["§4.1 5 no CXL region with a DAX region"] * 2
    assert responses(dev)[-1]["extents"] == [] and all_free(dev) and host.groups == []


def test_4_1_5_outside_the_endpoint_decoder():
    """§4.1 5: the range must lie fully inside the decoder's DPA range (never clipped)."""
    dev = device()
    host = Host(dev, decoder_length=32 * MiB)
    assert host.decoder == (0, 32 * MiB)
    dev.add_capacity(0, 0, [(16 * MiB, 2 * MiB), (30 * MiB, 4 * MiB), (40 * MiB, 2 * MiB)])
    host.poll()
    rule = "§4.1 5 outside the endpoint decoder"
    assert _refused(host) == [(30 * MiB, 4 * MiB, rule, "ENXIO"), (40 * MiB, 2 * MiB, rule, "ENXIO")]
    assert last_response(dev) == [(16 * MiB, 2 * MiB)] == held(host) == accepted(dev)
    assert dev.capacity().pending == 0 and dev.capacity().accepted == 2 * MiB


def test_4_1_5_duplicate_contained_in_an_extent_is_skipped_silently():
    """§4.1 5: an extent fully inside one already held is a DUPLICATE: no error, not listed."""
    dev = device()
    host = Host(dev)
    dev.add_capacity(0, 0, [(0, 8 * MiB)])
    host.poll()
    n_groups = len(host.groups)
    rows = [(2 * MiB, 2 * MiB), (0, 8 * MiB), (16 * MiB, 2 * MiB)]
    inject(dev, host, [(16 * MiB, 2 * MiB)], rows)
    assert _refused(host) == []
    assert last_response(dev) == [(16 * MiB, 2 * MiB)]
    assert held(host) == accepted(dev) == [(0, 8 * MiB), (16 * MiB, 2 * MiB)]
    assert len(host.groups) == n_groups + 1


def test_4_1_5_partial_overlap_is_refused():
    """§4.1 5: a partial overlap with a held extent (or covering several) is refused: ENXIO."""
    dev = device()
    host = Host(dev)
    dev.add_capacity(0, 0, [(0, 8 * MiB), (8 * MiB, 2 * MiB)])
    host.poll()
    rows = [(6 * MiB, 4 * MiB),            # straddles the end of (0, 8 MiB)
            (0, 10 * MiB),                 # covers both held extents: not inside ONE of them
            (20 * MiB, 2 * MiB)]
    inject(dev, host, [(20 * MiB, 2 * MiB)], rows)
    rule = "§4.1 5 partial overlap"
    assert _refused(host) == [(6 * MiB, 4 * MiB, rule, "ENXIO"), (0, 10 * MiB, rule, "ENXIO")]
    assert last_response(dev) == [(20 * MiB, 2 * MiB)]
    assert held(host) == accepted(dev) == [(0, 8 * MiB), (8 * MiB, 2 * MiB), (20 * MiB, 2 * MiB)]


def test_4_1_5_overlap_inside_one_chain_is_refused():
    """§4.1 5: two extents of one group that overlap each other are both refused."""
    dev = device()
    host = Host(dev)
    rows = [(0, 4 * MiB, TA), (2 * MiB, 4 * MiB, TA), (16 * MiB, 2 * MiB, TA)]
    inject(dev, host, [(16 * MiB, 2 * MiB)], rows)
    assert [r[:2] for r in _refused(host)] == [(0, 4 * MiB), (2 * MiB, 4 * MiB)]
    assert last_response(dev) == [(16 * MiB, 2 * MiB)] == held(host)


def test_4_1_5_a_hole_in_a_shareable_group_makes_it_unclaimable():
    """§4.1 5: a per-extent failure leaves a hole: group.view is None, create_dax EINVAL; the
    surviving extents are still accepted and listed."""
    dev = shared_device()
    host = Host(dev, decoder_length=32 * MiB)
    rows = [(0, 2 * MiB, TA, 0), (40 * MiB, 2 * MiB, TA, 1), (4 * MiB, 2 * MiB, TA, 2)]
    inject(dev, host, [(0, 2 * MiB), (4 * MiB, 2 * MiB)], rows, tag=TA)
    g = host.group(TA)
    assert group_rows(g) == [(0, 2 * MiB, 0), (4 * MiB, 2 * MiB, 2)] and g.view is None
    assert notes(host, "group_online")[-1]["claimable"] is False
    assert last_response(dev) == [(0, 2 * MiB), (4 * MiB, 2 * MiB)] == accepted(dev)
    with pytest.raises(HostError) as ei:
        host.create_dax(TA)
    assert host_errno(ei) == "EINVAL" and host.dax_devices == []
    with pytest.raises(HostError) as ei:
        host.view(TA)
    assert host_errno(ei) == "EINVAL"


# ---------------------------------------------------------------------------------------------
# §4.1 steps 6–7: host sequence numbers, the response
# ---------------------------------------------------------------------------------------------

def test_4_1_6_host_seq_is_the_device_seq_when_shareable():
    """§4.1 6: sharable ⇒ seq_num = shared_extn_seq."""
    dev = shared_device()
    host = Host(dev)
    rows = [(20 * MiB, 2 * MiB, TA, 2), (0, 2 * MiB, TA, 0), (10 * MiB, 4 * MiB, TA, 1)]
    inject(dev, host, [r[:2] for r in rows], rows)
    assert group_rows(host.group(TA)) == [(0, 2 * MiB, 0), (10 * MiB, 4 * MiB, 1), (20 * MiB, 2 * MiB, 2)]
    assert host.group(TA).shareable and host.group(TA).view.shareable


def test_4_1_6_host_seq_is_arrival_order_when_not_shareable():
    """§4.1 6: non-sharable ⇒ host-assigned arrival order 0, 1, 2, ..."""
    dev = device()
    host = Host(dev)
    rows = [(20 * MiB, 2 * MiB, TA), (0, 2 * MiB, TA), (10 * MiB, 4 * MiB, TA)]
    inject(dev, host, [r[:2] for r in rows], rows)
    assert group_rows(host.group(TA)) == [(20 * MiB, 2 * MiB, 0), (0, 2 * MiB, 1), (10 * MiB, 4 * MiB, 2)]
    g = host.group(TA)
    assert g.hpa.tolist() == [HPA + 20 * MiB, HPA, HPA + 10 * MiB] and g.size == 8 * MiB


def test_4_1_7_response_lists_accepted_extents_in_offer_order():
    """§4.1 7 / §3.4: ONE Add-Response, accepted extents in the order offered (not seq order,
    not group order); the device's offer-order check passes."""
    dev = shared_device()
    assert dev.require_offer_order
    host = Host(dev)
    rows = [(10 * MiB, 2 * MiB, TA, 1), (0, 2 * MiB, TB, 0), (20 * MiB, 4 * MiB, TA, 0),
            (30 * MiB, 2 * MiB, TC, 5), (40 * MiB, 2 * MiB, TB, 1)]
    inject(dev, host, [r[:2] for r in rows], rows)
    assert len(responses(dev)) == 1
    assert last_response(dev) == [(10 * MiB, 2 * MiB), (0, 2 * MiB), (20 * MiB, 4 * MiB), (40 * MiB, 2 * MiB)]
    assert accepted(dev) == held(host)


# ---------------------------------------------------------------------------------------------
# §4.3 DAX
# ---------------------------------------------------------------------------------------------

def test_4_3_claim_by_tag_assembles_the_group_in_seq_order():
    """§4.3: a tag claims ALL its extents in seq order; size = Σ lengths; uuid reads the tag."""
    dev = shared_device()
    host = Host(dev)
    rows = [(40 * MiB, 2 * MiB, TA, 2), (0, 4 * MiB, TA, 0), (20 * MiB, 2 * MiB, TA, 1)]
    inject(dev, host, [r[:2] for r in rows], rows)
    dax = host.create_dax(TA)
    assert dax.size == 8 * MiB and dax.uuid == TA and dax.name == "dax0.1"
    assert host.group(TA).dax is dax and host.dax_devices == [dax]
    expect = {0: HPA, 4 * MiB - 64: HPA + 4 * MiB - 64, 4 * MiB: HPA + 20 * MiB,
              6 * MiB: HPA + 40 * MiB, 8 * MiB - 64: HPA + 42 * MiB - 64}
    for off, hpa in expect.items():
        assert dax.translate(off) == hpa
    offs = np.arange(0, 8 * MiB, 64 * KiB, dtype=np.uint64)
    assert dax.translate_many(offs).tolist() == [dax.translate(int(o)) for o in offs]
    with pytest.raises(Exception):
        dax.translate(8 * MiB)


def test_4_3_claim_by_tag_string():
    """§4.3: the tag may be written as its UUID text."""
    dev = device()
    host = Host(dev)
    dev.add_capacity(0, 0, [(0, 2 * MiB)], tag=TA)
    host.poll()
    assert host.create_dax(str(TA)).uuid == TA


def test_4_3_zero_claims_exactly_one_untagged_extent():
    """§4.3: "0" claims one untagged resource; uuid reads back the null UUID."""
    dev = device()
    host = Host(dev)
    dev.add_capacity(0, 0, [(8 * MiB, 4 * MiB), (0, 2 * MiB)])
    dev.add_capacity(0, 0, [(32 * MiB, 2 * MiB)], tag=TA)
    host.poll()
    a = host.create_dax("0")
    b = host.create_dax("0")
    assert {(a.size, a.translate(0)), (b.size, b.translate(0))} == {(2 * MiB, HPA), (4 * MiB, HPA + 8 * MiB)}
    assert a.uuid == b.uuid == NULL_UUID and a.group is not b.group
    with pytest.raises(HostError) as ei:
        host.create_dax("0")
    assert host_errno(ei) == "ENOENT" and len(host.dax_devices) == 2


@pytest.mark.parametrize("tag", [TD, str(TD), NULL_UUID])
def test_4_3_unknown_tag_is_enoent_and_leaves_nothing_behind(tag):
    """§4.3: no match → ENOENT, no DAX device is left (the next one gets the first name)."""
    dev = device()
    host = Host(dev)
    dev.add_capacity(0, 0, [(0, 2 * MiB)], tag=TA)
    host.poll()
    with pytest.raises(HostError) as ei:
        host.create_dax(tag)
    assert host_errno(ei) == "ENOENT" and host.dax_devices == [] and host.group(TA).dax is None
    assert host.create_dax(TA).name == "dax0.1"


def test_4_3_bad_uuid_text_is_einval():
    """§4.3: writing something that is not a UUID to uuid fails with EINVAL."""
    host = Host(device())
    with pytest.raises(HostError) as ei:
        host.create_dax("not-a-uuid")
    assert host_errno(ei) == "EINVAL"


def test_4_3_claimed_tag_is_ebusy():
    """§4.3: a group claimed by one DAX device cannot be claimed again (EBUSY)."""
    dev = device()
    host = Host(dev)
    dev.add_capacity(0, 0, [(0, 2 * MiB)], tag=TA)
    host.poll()
    host.create_dax(TA)
    with pytest.raises(HostError) as ei:
        host.create_dax(TA)
    assert host_errno(ei) == "EBUSY" and len(host.dax_devices) == 1


def test_4_3_resize_nonzero_is_eopnotsupp_and_zero_destroys():
    """§4.3: resize to non-zero → EOPNOTSUPP; resize(0) destroys; the group can be claimed again."""
    dev = device()
    host = Host(dev)
    dev.add_capacity(0, 0, [(0, 2 * MiB), (8 * MiB, 2 * MiB)], tag=TA)
    host.poll()
    dax = host.create_dax(TA)
    for size in (2 * MiB, 8 * MiB, 1):
        with pytest.raises(HostError) as ei:
            dax.resize(size)
        assert ei.value.errno == E.EOPNOTSUPP
    assert dax.size == 4 * MiB and host.dax_devices == [dax]
    dax.resize(0)
    assert host.dax_devices == [] and host.group(TA).dax is None
    assert dax.size == 0 and dax.uuid == NULL_UUID
    with pytest.raises(HostError) as ei:
        dax.translate(0)
    assert host_errno(ei) == "ENXIO"
    with pytest.raises(HostError) as ei:
        host.destroy_dax(dax)
    assert host_errno(ei) == "ENODEV"
    again = host.create_dax(TA)
    assert again.size == 4 * MiB and again.name == "dax0.2"


def test_4_3_no_region_no_dax():
    """§4.3: without a DC region there is nothing to claim (ENXIO)."""
    host = Host(device(), create_region=False)
    with pytest.raises(HostError) as ei:
        host.create_dax(TA)
    assert host_errno(ei) == "ENXIO"


# ---------------------------------------------------------------------------------------------
# §4.4 Release
# ---------------------------------------------------------------------------------------------

def _tagged_host(shareable: bool = False, **kw: Any) -> Tuple[Device, Host]:
    dev = shared_device() if shareable else device()
    host = Host(dev, **kw)
    dev.add_capacity(0, 0, [(0, 4 * MiB), (8 * MiB, 2 * MiB), (16 * MiB, 2 * MiB)], tag=TA)
    dev.add_capacity(0, 0, [(32 * MiB, 2 * MiB)], tag=TB)
    host.poll()
    assert len(host.groups) == 2
    return dev, host


@pytest.mark.parametrize("shareable", [False, True])
@pytest.mark.parametrize("rng", [(8 * MiB, 2 * MiB), (2 * MiB, 2 * MiB), (0, 4 * MiB)])
def test_4_4_release_of_any_member_releases_the_whole_group(shareable, rng):
    """§4.4: any member (or a sub-range of one) addressed ⇒ the whole tag group is released,
    one Release DC per extent, never split; the device's capacity is free again."""
    dev, host = _tagged_host(shareable)
    dev.release_capacity(0, 0, [rng])
    host.poll()
    dcs = notes(host, "release_dc")
    assert [(e["start"], e["length"], e["status"]) for e in dcs] == \
        [(0, 4 * MiB, "SUCCESS"), (8 * MiB, 2 * MiB, "SUCCESS"), (16 * MiB, 2 * MiB, "SUCCESS")]
    assert held(host) == accepted(dev) == [(32 * MiB, 2 * MiB)]
    assert [g.tag for g in host.groups] == [TB]
    with pytest.raises(HostError):
        host.group(TA)
    assert dev.capacity().accepted == 2 * MiB and dev.capacity().free == 254 * MiB


def test_4_4_tag_based_release_chain_releases_once():
    """§4.4: a tag-based release names every extent; the first releases the group, the others
    find nothing left (refused, no second Release DC)."""
    dev, host = _tagged_host()
    dev.release_capacity(0, 0, policy="tag-based", tag=TA)
    host.poll()
    assert len(notes(host, "release_dc")) == 3 and len(notes(host, "group_released")) == 1
    assert len(notes(host, "release_refused")) == 2
    assert held(host) == accepted(dev) == [(32 * MiB, 2 * MiB)]


@pytest.mark.parametrize("rng,tag,why", [
    ((0, 2 * MiB), TB, "another tag"),
    ((0, 2 * MiB), None, "untagged request for a tagged extent"),
    ((0, 10 * MiB), TA, "larger than the extent"),
    ((2 * MiB, 8 * MiB), TA, "runs past the extent"),
    ((64 * MiB, 2 * MiB), TA, "nothing held there"),
])
def test_4_4_release_must_be_contained_in_an_extent_of_the_same_tag(rng, tag, why):
    """§4.4: no held extent of the request's tag contains the range → EINVAL, no response."""
    dev, host = _tagged_host()
    before = (accepted(dev), dev.generation(0), len(dev.log))
    feed(host, [(*rng, tag)], RELEASE)
    (refused,) = notes(host, "release_refused")
    assert refused["errno"] == "EINVAL"
    assert notes(host, "release_dc") == [] and len(host.groups) == 2
    assert (accepted(dev), dev.generation(0), len(dev.log)) == before


def test_4_4_release_across_two_adjacent_extents_is_refused():
    """§4.4: the range must be inside ONE extent, even when two extents of the tag touch."""
    dev = device()
    host = Host(dev)
    dev.add_capacity(0, 0, [(0, 2 * MiB), (2 * MiB, 2 * MiB)], tag=TA)
    host.poll()
    feed(host, [(0, 4 * MiB, TA)], RELEASE)
    assert len(notes(host, "release_refused")) == 1 and notes(host, "release_dc") == []
    assert held(host) == accepted(dev) == [(0, 2 * MiB), (2 * MiB, 2 * MiB)]


def test_4_4_untagged_release_releases_only_that_extent():
    """§4.4: an untagged extent is a group of its own."""
    dev = device()
    host = Host(dev)
    dev.add_capacity(0, 0, [(0, 2 * MiB), (8 * MiB, 2 * MiB)])
    host.poll()
    dev.release_capacity(0, 0, [(8 * MiB, 2 * MiB)])
    host.poll()
    assert [(e["start"], e["length"]) for e in notes(host, "release_dc")] == [(8 * MiB, 2 * MiB)]
    assert held(host) == accepted(dev) == [(0, 2 * MiB)]


def test_4_4_release_is_deferred_while_a_dax_device_claims_the_group():
    """§4.4: EBUSY from DAX defers the release (nothing sent); re-issued after destroy it is answered."""
    dev, host = _tagged_host()
    dax = host.create_dax(TA)
    before = accepted(dev)
    dev.release_capacity(0, 0, policy="tag-based", tag=TA)
    host.poll()
    deferred = notes(host, "release_deferred")
    assert deferred and all(e["errno"] == "EBUSY" for e in deferred)
    assert notes(host, "release_dc") == [] and accepted(dev) == before == held(host)
    assert dax.size == 8 * MiB
    dax.resize(0)
    assert accepted(dev) == before                    # destroying the DAX device sends nothing
    dev.release_capacity(0, 0, [(16 * MiB, 2 * MiB)])  # the FM re-issues
    host.poll()
    assert len(notes(host, "release_dc")) == 3
    assert held(host) == accepted(dev) == [(32 * MiB, 2 * MiB)]


def test_4_4_release_with_no_region_is_answered_at_once():
    """§4.4: no region → Release DC for the range at once (crash leftovers), ENXIO logged."""
    dev = device()
    dev.add_capacity(0, 0, [(0, 2 * MiB), (8 * MiB, 2 * MiB)], tag=TA)   # accepted by a previous boot
    dev.take_events(0)
    dev.add_response(0, [(0, 2 * MiB), (8 * MiB, 2 * MiB)])
    host = Host(dev, create_region=False)
    dev.release_capacity(0, 0, [(8 * MiB, 2 * MiB)])
    host.poll()
    (e,) = notes(host, "release_no_region")
    assert (e["start"], e["length"], e["errno"]) == (8 * MiB, 2 * MiB, "ENXIO")
    assert [(d["start"], d["length"], d["status"]) for d in notes(host, "release_dc")] == [(8 * MiB, 2 * MiB, "SUCCESS")]
    assert accepted(dev) == [(0, 2 * MiB)]


def test_4_4_release_outside_the_decoder_is_answered_at_once():
    """§4.4: a DPA the region does not map resolves to no region: answered at once."""
    dev = device()
    dev.add_capacity(0, 0, [(64 * MiB, 2 * MiB)])
    dev.take_events(0)
    dev.add_response(0, [(64 * MiB, 2 * MiB)])
    host = Host(dev, decoder_length=32 * MiB)
    assert held(host) == []                        # the rescan refused it (outside the decoder)
    dev.release_capacity(0, 0, [(64 * MiB, 2 * MiB)])
    host.poll()
    assert len(notes(host, "release_no_region")) == 1 and all_free(dev)


def test_4_4_forced_release_is_logged_and_ignored():
    """§4.4: Forced Capacity Release is logged and ignored: the host still believes it holds the
    capacity; the device does not."""
    dev, host = _tagged_host()
    dev.release_capacity(0, 0, policy="tag-based", tag=TA, forced=True)
    assert accepted(dev) == [(32 * MiB, 2 * MiB)]      # the device took it back at once
    host.poll()
    forced = notes(host, "forced_release_ignored")
    assert [(e["start"], e["length"]) for e in forced] == [(0, 4 * MiB), (8 * MiB, 2 * MiB), (16 * MiB, 2 * MiB)]
    assert notes(host, "release_dc") == []
    assert held(host) == [(0, 4 * MiB), (8 * MiB, 2 * MiB), (16 * MiB, 2 * MiB), (32 * MiB, 2 * MiB)]
    assert host.create_dax(TA).size == 8 * MiB         # still claimable on the host
    assert dev.capacity().accepted == 2 * MiB


@pytest.mark.parametrize("kind", [DcEventType.REGION_CONFIGURATION_UPDATED, DcEventType.ADD_CAPACITY_RESPONSE,
                                  DcEventType.CAPACITY_RELEASED])
def test_4_4_other_event_types_are_logged_as_unhandled(kind):
    """§4.4: Region Configuration Updated (and the FM-side types) are not handled."""
    dev, host = _tagged_host()
    before = (held(host), accepted(dev))
    feed(host, [(0, 2 * MiB)], kind)
    (e,) = notes(host, "event_unhandled")
    assert e["type"] == int(kind)
    assert (held(host), accepted(dev)) == before and host.staged == 0


# ---------------------------------------------------------------------------------------------
# §4.5 Region lifecycle
# ---------------------------------------------------------------------------------------------

def _preaccepted(dev: Device, extents, tag=None) -> None:
    """Capacity accepted on head 0 before the host exists (a previous boot)."""
    dev.add_capacity(0, 0, extents, tag=tag)
    dev.take_events(0)
    dev.add_response(0, extents)


def test_4_5_create_region_recovers_extents_without_an_add_response():
    """§4.5: the device's extent list goes through the same pipeline; no Add-Response is sent."""
    dev = shared_device()
    _preaccepted(dev, [(40 * MiB, 2 * MiB), (0, 4 * MiB), (20 * MiB, 2 * MiB)], TA)   # seq 0, 1, 2
    _preaccepted(dev, [(64 * MiB, 2 * MiB)], TB)
    n = len(responses(dev))
    host = Host(dev)
    assert len(responses(dev)) == n and notes(host, "add_response") == []
    assert notes(host, "region_created")[0]["recovered"] == 4
    assert all(e["recovered"] for e in notes(host, "group_online"))
    assert held(host) == accepted(dev)
    assert group_rows(host.group(TA)) == [(40 * MiB, 2 * MiB, 0), (0, 4 * MiB, 1), (20 * MiB, 2 * MiB, 2)]
    assert host.create_dax(TA).translate(2 * MiB) == HPA       # seq order, not DPA order


def test_4_5_create_region_later_and_only_once():
    """§4.5: create_region may be called later; a second one is EEXIST."""
    dev = device()
    _preaccepted(dev, [(0, 2 * MiB)])
    host = Host(dev, create_region=False)
    assert host.decoder is None and held(host) == []
    host.create_region()
    assert held(host) == [(0, 2 * MiB)]
    with pytest.raises(HostError) as ei:
        host.create_region()
    assert host_errno(ei) == "EEXIST"


def test_4_5_recovery_reads_every_page():
    """§3.5/§4.5: more extents than fit one Get Extent List payload are all recovered."""
    dev = device(region(length=512 * MiB))
    ext = [(4 * i * MiB, 2 * MiB) for i in range(70)]
    _preaccepted(dev, ext)
    host = Host(dev)
    assert held(host) == ext and len(host.groups) == 70


def test_4_5_recovery_applies_the_gates():
    """§4.5: recovered extents pass the same gates (here: the decoder)."""
    dev = device()
    _preaccepted(dev, [(0, 2 * MiB), (64 * MiB, 2 * MiB)])
    host = Host(dev, decoder_length=32 * MiB)
    assert held(host) == [(0, 2 * MiB)]
    assert [r[2] for r in _refused(host)] == ["§4.1 5 outside the endpoint decoder"]


def test_4_5_second_scan_of_a_live_region_is_idempotent():
    """§4.5/§4.1 5: rescanning (here: forgetting the decoder and creating the region again) finds
    only duplicates (untagged: skipped silently) and live tags (4a): nothing changes."""
    dev = device()
    _preaccepted(dev, [(0, 2 * MiB), (8 * MiB, 2 * MiB)])
    _preaccepted(dev, [(16 * MiB, 2 * MiB), (20 * MiB, 2 * MiB)], TA)
    host = Host(dev)
    before = ([group_rows(g) for g in host.groups], held(host), accepted(dev), len(dev.log))
    host.decoder = None
    host.create_region()
    assert ([group_rows(g) for g in host.groups], held(host), accepted(dev)) == before[:3]
    assert {e["op"] for e in dev.log[before[3]:]} == {"get_extent_list"}   # no Add-Response, no Release DC
    assert _refused(host) == [] and len(notes(host, "group_online")) == 3
    assert [e["rule"] for e in notes(host, "group_refused")] == ["§4.1 4a tag already live"]


def _flaky_extent_list(dev: Device, monkeypatch, changes: int) -> None:
    """Pages of one extent; the first ``changes`` reads of a later page see a new generation."""
    real = dev.get_extent_list
    left = [changes]

    def fake(head, count=None, start_index=0):
        out = real(head, 1, start_index)
        if start_index > 0 and left[0] > 0:
            left[0] -= 1
            return R.GetDcExtentListOut(out.total_extents, out.generation + 1, out.extents)
        return out

    monkeypatch.setattr(dev, "get_extent_list", fake)


@pytest.mark.parametrize("changes", [1, 3, RESCAN_RETRIES - 1])
def test_4_5_rescan_rereads_when_the_generation_changes(monkeypatch, changes):
    """§3.5: the list is reread when the generation number changes between pages."""
    dev = device()
    _preaccepted(dev, [(0, 2 * MiB), (8 * MiB, 2 * MiB), (16 * MiB, 2 * MiB)])
    _flaky_extent_list(dev, monkeypatch, changes)
    host = Host(dev)
    assert len(notes(host, "rescan_retry")) == changes
    assert held(host) == accepted(dev)


def test_4_5_rescan_rereads_when_the_total_changes(monkeypatch):
    """§3.5: a total that changes between pages also forces a reread."""
    dev = device()
    _preaccepted(dev, [(0, 2 * MiB), (8 * MiB, 2 * MiB)])
    real = dev.get_extent_list
    state = {"n": 0}

    def fake(head, count=None, start_index=0):
        out = real(head, 1, start_index)
        state["n"] += 1
        if state["n"] == 2:                 # the second page of the first read says 3
            return R.GetDcExtentListOut(3, out.generation, out.extents)
        return out

    monkeypatch.setattr(dev, "get_extent_list", fake)
    host = Host(dev)
    assert len(notes(host, "rescan_retry")) == 1 and held(host) == accepted(dev)


def test_4_5_rescan_gives_up_with_eagain_after_the_retries(monkeypatch):
    """§3.5: after RESCAN_RETRIES changing reads create_region fails with EAGAIN and leaves no
    region behind."""
    dev = device()
    _preaccepted(dev, [(0, 2 * MiB), (8 * MiB, 2 * MiB)])
    real = dev.get_extent_list
    gen = [0]

    def fake(head, count=None, start_index=0):
        out = real(head, 1, start_index)
        gen[0] += 1
        return R.GetDcExtentListOut(out.total_extents, gen[0], out.extents)

    monkeypatch.setattr(dev, "get_extent_list", fake)
    host = Host(dev, create_region=False)
    with pytest.raises(HostError) as ei:
        host.create_region()
    assert host_errno(ei) == "EAGAIN"
    assert len(notes(host, "rescan_retry")) == RESCAN_RETRIES
    assert host.decoder is None and held(host) == [] and host.groups == []
    monkeypatch.setattr(dev, "get_extent_list", real)
    host.create_region()                                # the list settled: it works now
    assert held(host) == accepted(dev)


def test_4_5_destroy_region_releases_everything():
    """§4.4/§4.5: region destroy sends Release DC for every extent; EBUSY while a DAX device
    exists (nothing released)."""
    dev, host = _tagged_host()
    dax = host.create_dax(TB)
    with pytest.raises(HostError) as ei:
        host.destroy_region()
    assert host_errno(ei) == "EBUSY"
    assert notes(host, "release_dc") == [] and held(host) == accepted(dev) and len(host.groups) == 2
    dax.resize(0)
    host.destroy_region()
    assert len(notes(host, "release_dc")) == 4
    assert all(e["status"] == "SUCCESS" for e in notes(host, "release_dc"))
    assert {e["why"] for e in notes(host, "group_released")} == {"region destroy"}
    assert host.decoder is None and host.groups == [] and held(host) == [] and all_free(dev)
    with pytest.raises(HostError) as ei:
        host.destroy_region()
    assert host_errno(ei) == "ENXIO"
    # without a region: adds are refused, releases answered at once
    dev.add_capacity(0, 0, [(0, 2 * MiB)])
    host.poll()
    assert all_free(dev)
    host.create_region()
    assert held(host) == []


def test_4_5_unload_releases_everything():
    """§4.4: dax_cxl unload releases like region destroy."""
    dev, host = _tagged_host()
    host.unload()
    assert {e["why"] for e in notes(host, "group_released")} == {"driver unload"}
    assert notes(host, "region_destroyed")[0]["why"] == "driver unload"
    assert all_free(dev) and host.groups == []


# ---------------------------------------------------------------------------------------------
# §4.6 Versions
# ---------------------------------------------------------------------------------------------

def test_4_6_v9_refuses_tags_and_nonzero_seq():
    """§4.6 K9: a non-null tag ("tags not supported") or a non-zero seq ("can not be shared")
    is refused per extent; plain untagged extents are accepted."""
    dev = device()
    host = Host(dev, version="v9")
    rows = [(0, 2 * MiB, TA, 0), (8 * MiB, 2 * MiB, None, 1), (16 * MiB, 2 * MiB)]
    inject(dev, host, [r[:2] for r in rows], rows)
    assert [r[2] for r in _refused(host)] == ["§4.6 K9: tags not supported", "§4.6 K9: extent can not be shared"]
    assert last_response(dev) == [(16 * MiB, 2 * MiB)] == held(host)


def test_4_6_v10_treats_seq_1_to_n_as_shared():
    """§4.6 K10: seq 1..n means shared (the layout follows it, host seq = seq - 1)."""
    dev = device()                                   # even on a non-shareable partition
    host = Host(dev, version="v10")
    rows = [(20 * MiB, 2 * MiB, TA, 3), (0, 2 * MiB, TA, 1), (10 * MiB, 2 * MiB, TA, 2)]
    inject(dev, host, [r[:2] for r in rows], rows)
    g = host.group(TA)
    assert g.shareable and group_rows(g) == [(0, 2 * MiB, 0), (10 * MiB, 2 * MiB, 1), (20 * MiB, 2 * MiB, 2)]
    assert host.view(TA).translate(2 * MiB) == HPA + 10 * MiB
    assert last_response(dev) == [r[:2] for r in rows]


def test_4_6_v10_seq_zero_is_not_shared_and_1_to_n_must_be_dense():
    """§4.6 K10: seq 0 = not shared (arrival order); shared seqs must be exactly 1..n."""
    dev = device()
    host = Host(dev, version="v10")
    rows = [(20 * MiB, 2 * MiB, TA, 0), (0, 2 * MiB, TA, 0),       # not shared
            (32 * MiB, 2 * MiB, TB, 1), (40 * MiB, 2 * MiB, TB, 3)]  # 1, 3: a gap
    inject(dev, host, [r[:2] for r in rows], rows)
    g = host.group(TA)
    assert not g.shareable and group_rows(g) == [(20 * MiB, 2 * MiB, 0), (0, 2 * MiB, 1)]
    assert [(e["tag"], e["rule"]) for e in notes(host, "group_refused")] == \
        [(str(TB), "§4.1 4b sequence numbers are not 0..n-1")]
    assert last_response(dev) == [(20 * MiB, 2 * MiB), (0, 2 * MiB)]


def test_4_6_v11_shares_seq_0_to_n_minus_1():
    """§4.6 K11: seq 0..n-1 as in the spec (a v10 layout 1..n is refused by 4b)."""
    dev = shared_device()
    host = Host(dev)
    rows = [(0, 2 * MiB, TA, 1), (8 * MiB, 2 * MiB, TA, 2)]
    inject(dev, host, [r[:2] for r in rows], rows)
    assert [e["rule"] for e in notes(host, "group_refused")] == ["§4.1 4b sequence numbers are not 0..n-1"]


# ---------------------------------------------------------------------------------------------
# Multi-head sharing: one view on every host (§6.3)
# ---------------------------------------------------------------------------------------------

def test_6_3_shared_tag_reaches_the_same_memory_on_every_head():
    """§3.6/§6.3: enable-shared-access gives other heads the tag re-split and re-ordered; every
    host assembles the same layout (verify_views over HPA -> DPA media maps)."""
    dev = device(region(shareable=True, dsmad_handle=1), heads=3, seed=11)
    hosts = [Host(dev, h, hpa_base=HPA + (h << 36)) for h in range(3)]
    dev.add_capacity(0, 0, policy="free", length=24 * MiB, tag=TA)
    hosts[0].poll()
    for h in (1, 2):
        dev.add_capacity(h, 0, policy="enable-shared-access", tag=TA)
        hosts[h].poll()
    views = [h.view(TA) for h in hosts]
    assert {v.size for v in views} == {24 * MiB}
    check = verify_views(views, [h.media_map() for h in hosts])
    assert check.consistent, check
    daxes = [h.create_dax(TA) for h in hosts]
    offs = np.arange(0, 24 * MiB, 512 * KiB, dtype=np.uint64)
    dpas = [d.translate_many(offs) - np.uint64(h.hpa_base) for d, h in zip(daxes, hosts)]
    assert all(np.array_equal(dpas[0], x) for x in dpas[1:])


# ---------------------------------------------------------------------------------------------
# Hypothesis: the §4.1 pipeline against a plain-Python oracle
# ---------------------------------------------------------------------------------------------

P0_LEN = 64 * MiB
P1_BASE = 256 * MiB
_TAGS = [NULL_UUID, TA, TB, TC]          # TA is live before the chain


def _oracle(rows, parts, held_: List[Tuple[int, int]], live: set, decoder, alignment):
    """§4.1 step by step, in plain Python.  Returns (response in offer order, new groups as
    {tag or ("null", i): (rows (start, length, host seq) in seq order, claimable)})."""
    held_ = list(held_)
    live = set(live)

    def part_of(s):
        idx = [k for k, p in enumerate(parts) if p.base <= s]
        return idx[-1] if idx else None

    def classify(s, n):
        e = s + n
        over = [(a, b) for a, b in held_ if a < e and s < a + b]
        if not over:
            return "free"
        if any(a <= s and e <= a + b for a, b in over):
            return "within"
        covered = sum(min(e, a + b) - max(s, a) for a, b in over)
        return "covered" if covered == n else "partial"

    groups: Dict[Any, List[int]] = {}
    for i, (s, n, t, q) in enumerate(rows):
        groups.setdefault(("null", i) if t == NULL_UUID else t, []).append(i)
    accepted_idx = set()
    out: Dict[Any, Tuple[List[Tuple[int, int, int]], bool]] = {}
    for key, idx in groups.items():
        idx = sorted(idx, key=lambda i: rows[i][3])
        t = rows[idx[0]][2]
        pidx = [part_of(rows[i][0]) for i in idx]
        shareable = pidx[0] is not None and parts[pidx[0]].shareable
        seqs = [rows[i][3] for i in idx]
        if t != NULL_UUID and t in live:
            continue
        if shareable and seqs != list(range(len(idx))):
            continue
        if t != NULL_UUID and len(set(pidx)) > 1:
            continue
        if any(rows[i][0] % alignment or rows[i][1] % alignment for i in idx):
            continue
        kept = []
        for pos, i in enumerate(idx):
            s, n, _, q = rows[i]
            p = pidx[pos]
            good = p is not None and n > 0 and s + n <= parts[p].base + parts[p].length
            good &= not (shareable and t == NULL_UUID)
            good &= shareable or q == 0
            good &= decoder[0] <= s and s + n <= decoder[0] + decoder[1]
            kind = classify(s, n) if good else None
            good &= kind not in ("covered", "partial")
            good &= not any(j != i and rows[j][0] < s + n and s < rows[j][0] + rows[j][1] for j in idx)
            if good and kind != "within":
                kept.append((s, n, q if shareable else pos, i))
        if not kept:
            continue
        kept.sort(key=lambda k: k[2])
        out[key] = ([k[:3] for k in kept], [k[2] for k in kept] == list(range(len(kept))))
        held_ += [k[:2] for k in kept]
        accepted_idx |= {k[3] for k in kept}
        if t != NULL_UUID:
            live.add(t)
    return [rows[i][:2] for i in range(len(rows)) if i in accepted_idx], out


_row = st.tuples(
    st.one_of(st.integers(0, 36).map(lambda b: b * 2 * MiB),                 # partition 0
              st.integers(0, 8).map(lambda b: P1_BASE + b * 2 * MiB),        # partition 1
              st.integers(0, 30).map(lambda b: b * 2 * MiB + MiB)),          # misaligned
    st.one_of(st.integers(1, 4).map(lambda k: k * 2 * MiB), st.just(3 * MiB), st.just(16 * MiB)),
    st.sampled_from(_TAGS),
    st.sampled_from([0, 0, 0, 1, 1, 2, 3]),
)


@settings(max_examples=max(20, settings.default.max_examples // 2))
@given(rows=st.lists(_row, min_size=1, max_size=8), shareable=st.booleans(),
       other_shareable=st.booleans(), decoder_length=st.sampled_from([32 * MiB, 64 * MiB]))
def test_property_4_1_pipeline_matches_the_oracle(rows, shareable, other_shareable, decoder_length):
    """§4.1: for any chain of (possibly malformed) records the host accepts exactly what the
    rules accept, groups them as the rules say, and the device takes the response."""
    parts = [region(0, P0_LEN, block_size=1 * MiB, shareable=shareable, dsmad_handle=1),
             region(P1_BASE, 64 * MiB, block_size=1 * MiB, shareable=other_shareable, dsmad_handle=2)]
    dev = Device(parts, require_offer_order=False)
    host = Host(dev, decoder_length=decoder_length)
    # Before the chain: TA live at (0, 4 MiB), (8 MiB, 2 MiB); untagged (12 MiB, 2 MiB) if allowed.
    dev.add_capacity(0, 0, [(0, 4 * MiB), (8 * MiB, 2 * MiB)], tag=TA)
    if not shareable:
        dev.add_capacity(0, 0, [(12 * MiB, 2 * MiB)])
    host.poll()
    before = held(host)
    assert host.group(TA) is not None
    # One offer covering the rest of partition 0 (block-aligned gaps of what is held).
    gaps, at = [], 0
    for s, n in before + [(P0_LEN, 0)]:
        if s > at:
            gaps.append((at, s - at))
        at = s + n
    dev.add_capacity(0, 0, gaps)
    dev.take_events(0)
    n_groups = len(host.groups)
    feed(host, rows)
    want_resp, want_groups = _oracle(rows, host.partitions, before, {TA}, host.decoder, host.alignment)
    assert last_response(dev) == want_resp
    new = host.groups[n_groups:]
    got = {}
    for g in new:
        key = g.tag if g.tag != NULL_UUID else ("null", None)
        got.setdefault(key, []).append((group_rows(g), g.view is not None))
    want: Dict[Any, list] = {}
    for k, v in want_groups.items():
        want.setdefault(k if isinstance(k, uuid.UUID) else ("null", None), []).append(v)
    assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in want.items()}
    assert held(host) == accepted(dev) == sorted(before + want_resp)
    assert dev.pending_offers(0) == []
    dev.check_invariants()
    for g in new:
        if g.view is not None:
            assert g.view.size == g.size


@settings(max_examples=max(20, settings.default.max_examples // 2))
@given(n=st.integers(1, 8), data=st.data())
def test_property_4_1_view_is_independent_of_arrival_order(n, data):
    """§4.1 2 / §6.3: a shared group's view depends on its seqs only, never on arrival order."""
    starts = data.draw(st.lists(st.integers(0, 30), min_size=n, max_size=n, unique=True))
    lengths = [data.draw(st.integers(1, 3)) for _ in range(n)]
    ext = [(s * 8 * MiB, k * 2 * MiB, TA, q) for q, (s, k) in enumerate(zip(starts, lengths))]
    perm = data.draw(st.permutations(range(n)))
    views = []
    for order in (range(n), perm):
        dev = shared_device()
        host = Host(dev)
        rows = [ext[i] for i in order]
        inject(dev, host, [r[:2] for r in rows], rows)
        assert last_response(dev) == [r[:2] for r in rows]
        views.append(host.view(TA))
    a, b = (v.segments() for v in views)
    assert np.array_equal(a.host_starts, b.host_starts) and np.array_equal(a.lengths, b.lengths)
    assert verify_views(views).consistent


# ---------------------------------------------------------------------------------------------
# Hypothesis: one multi-head device, one host per head
# ---------------------------------------------------------------------------------------------

BLOCK = 2 * MiB
R_LEN = 64 * MiB
R1_BASE = 256 * MiB


class HostsMachine(RuleBasedStateMachine):
    """Random offers, shares, polls, releases, DAX claims and forced releases on a device with
    a shareable and a non-shareable region (the hosts use only the first); after every step:
    the device's invariants, capacity conservation, each settled host = the device, no partially
    surfaced group, and every tag held by several hosts assembles the same memory."""

    FIRST_SHAREABLE = True

    @initialize(heads=st.integers(2, 3), seed=st.integers(0, 1 << 16))
    def setup(self, heads, seed):
        s = self.FIRST_SHAREABLE
        self.dev = Device([Region(0, R_LEN, shareable=s, dsmad_handle=1),
                           Region(R1_BASE, R_LEN, shareable=not s, dsmad_handle=2)], heads=heads, seed=seed)
        self.hosts = [Host(self.dev, h, hpa_base=HPA + (h << 36)) for h in range(heads)]
        self.stale: set = set()
        self.next_tag = 1
        self.shareable_region = 0 if s else 1

    # -- helpers

    def _head(self, data) -> int:
        return data.draw(st.integers(0, len(self.hosts) - 1), label="head")

    def _settled(self, h: int) -> bool:
        return self.hosts[h].staged == 0 and not self.dev.events_view(h)

    def _device_tags(self, h: int) -> List[uuid.UUID]:
        a = self.dev.accepted(h)
        tags = {uuid.UUID(bytes=bytes(t)) for t in a["tag"]}
        return sorted(tags - {NULL_UUID})

    def _live_settled(self) -> List[int]:
        return [h for h, host in enumerate(self.hosts) if h not in self.stale and self._settled(h)
                and any(g.tag != NULL_UUID for g in host.groups)]

    def _holding(self) -> List[int]:
        return [h for h in range(len(self.hosts)) if len(self.dev.accepted(h))]

    # -- rules

    @rule(data=st.data())
    def offer(self, data):
        h = self._head(data)
        region_index = data.draw(st.sampled_from([0, 0, 0, 1]), label="region")
        base = 0 if region_index == 0 else R1_BASE
        policy = data.draw(st.sampled_from(["prescriptive", "free", "contiguous"]), label="policy")
        tag = None
        if data.draw(st.sampled_from([True, True, True, False]), label="tagged"):
            tag = uuid.UUID(int=self.next_tag)
            self.next_tag += 1
        before = self.dev.capacity()
        try:
            if policy == "prescriptive":
                ext = data.draw(st.lists(st.tuples(st.integers(0, 31), st.integers(1, 3)), min_size=1, max_size=3),
                                label="extents")
                self.dev.add_capacity(h, region_index, [(base + b * BLOCK, k * BLOCK) for b, k in ext], tag=tag)
            else:
                length = data.draw(st.integers(1, 4), label="blocks") * BLOCK
                self.dev.add_capacity(h, region_index, policy=policy, length=length, tag=tag)
        except RequestError:
            assert self.dev.capacity() == before          # a refused request changes nothing
            return
        if data.draw(st.booleans(), label="poll now"):
            self.hosts[h].poll()

    @precondition(lambda self: self._live_settled())
    @rule(data=st.data())
    def reoffer_live_tag(self, data):
        """§4.1 4a: a settled host given a new chain under a tag it holds refuses it all."""
        h = data.draw(st.sampled_from(self._live_settled()), label="head")
        host = self.hosts[h]
        live = [g.tag for g in host.groups if g.tag != NULL_UUID]
        tag = data.draw(st.sampled_from(live), label="tag")
        try:
            self.dev.add_capacity(h, 0, policy="free", length=BLOCK, tag=tag)
        except RequestError:
            return
        n = len(notes(host, "group_refused"))
        extents = held(host)
        host.poll()
        assert [e["rule"] for e in notes(host, "group_refused")[n:]] == ["§4.1 4a tag already live"]
        assert held(host) == extents and responses(self.dev, h)[-1]["extents"] == []

    @precondition(lambda self: any(self._device_tags(h) for h in range(len(self.hosts))))
    @rule(data=st.data())
    def share(self, data):
        src = [(h, t) for h in range(len(self.hosts)) for t in self._device_tags(h)]
        _, tag = data.draw(st.sampled_from(src), label="source")
        h = self._head(data)
        before = self.dev.capacity()
        try:
            self.dev.add_capacity(h, self.shareable_region, policy="enable-shared-access", tag=tag)
        except RequestError:
            assert self.dev.capacity() == before
            return
        if data.draw(st.booleans(), label="poll now"):
            self.hosts[h].poll()

    @rule(data=st.data())
    def poll(self, data):
        h = self._head(data)
        limit = data.draw(st.one_of(st.none(), st.integers(1, 4)), label="limit")
        self.hosts[h].poll(limit=limit)

    @rule()
    def poll_all(self):
        for host in self.hosts:
            host.poll()

    @precondition(lambda self: self._holding())
    @rule(data=st.data())
    def release(self, data):
        h = data.draw(st.sampled_from(self._holding()), label="head")
        a = self.dev.accepted(h)
        i = data.draw(st.integers(0, len(a) - 1), label="extent")
        s, n = int(a["start"][i]), int(a["length"][i])
        tag = uuid.UUID(bytes=bytes(a["tag"][i]))
        region_index = 0 if s < R1_BASE else 1
        how = data.draw(st.sampled_from(["tag", "extent", "block"]), label="how")
        try:
            if how == "tag" and tag != NULL_UUID:
                self.dev.release_capacity(h, region_index, policy="tag-based", tag=tag)
            elif how == "block":
                k = data.draw(st.integers(0, n // BLOCK - 1), label="block")
                self.dev.release_capacity(h, region_index, [(s + k * BLOCK, BLOCK)])
            else:
                self.dev.release_capacity(h, region_index, [(s, n)])
        except RequestError:
            pass

    @precondition(lambda self: self._holding() and len(self.stale) < len(self.hosts) - 1)
    @rule(data=st.data())
    def forced_release(self, data):
        h = data.draw(st.sampled_from(self._holding()), label="head")
        a = self.dev.accepted(h)
        i = data.draw(st.integers(0, len(a) - 1), label="extent")
        s, n = int(a["start"][i]), int(a["length"][i])
        tag = uuid.UUID(bytes=bytes(a["tag"][i]))
        region_index = 0 if s < R1_BASE else 1
        if tag != NULL_UUID:           # whole tags only, so what a head holds of a tag stays whole
            self.dev.release_capacity(h, region_index, policy="tag-based", tag=tag, forced=True)
        else:
            self.dev.release_capacity(h, region_index, [(s, n)], forced=True)
        self.stale.add(h)

    @precondition(lambda self: any(host.groups for host in self.hosts))
    @rule(data=st.data())
    def dax_create(self, data):
        h = data.draw(st.sampled_from([h for h, host in enumerate(self.hosts) if host.groups]), label="head")
        host = self.hosts[h]
        choices = [g.tag for g in host.groups if g.tag != NULL_UUID] + ["0"]
        tag = data.draw(st.sampled_from(choices), label="tag")
        try:
            dax = host.create_dax(tag)
        except HostError as e:
            if tag == "0":
                assert e.errno == E.ENOENT
            else:
                g = host.group(tag)
                assert (e.errno, g.dax is not None or g.view is None) in ((E.EBUSY, True), (E.EINVAL, True))
            return
        assert dax.size == dax.group.size and dax.group.dax is dax
        if tag != "0":
            assert dax.uuid == tag and dax.translate(0) == dax.group.view.translate(0)

    @precondition(lambda self: any(host.dax_devices for host in self.hosts))
    @rule(data=st.data())
    def dax_destroy(self, data):
        daxes = [d for host in self.hosts for d in host.dax_devices]
        data.draw(st.sampled_from(daxes), label="dax").resize(0)

    # -- invariants

    @invariant()
    def device_is_consistent(self):
        self.dev.check_invariants()

    @invariant()
    def capacity_is_conserved(self):
        """free + pending + accepted == total, the union of what heads hold counted independently."""
        dev = self.dev
        c = dev.capacity()
        assert c.free + c.pending + c.accepted == c.total == 2 * R_LEN
        acc, hold = ExtentMap(64), ExtentMap(64)
        for h in range(dev.nheads):
            a = dev.accepted(h)
            parts = [(a["start"], a["length"], acc)]
            parts.append((a["start"], a["length"], hold))
            for o in dev.pending_offers(h):
                parts.append((o.extents["start"], o.extents["length"], hold))
            for s, n, m in parts:
                if len(s):
                    m.remove_many(s, n)
                    m.insert_many(s, n)
        assert c.accepted == acc.mapped_bytes
        assert c.free == c.total - hold.mapped_bytes

    @invariant()
    def settled_hosts_agree_with_the_device(self):
        for h, host in enumerate(self.hosts):
            if h in self.stale or not self._settled(h):
                continue
            a = self.dev.accepted(h)
            assert held(host) == list(zip(a["start"].tolist(), a["length"].tolist()))
            assert self.dev.pending_offers(h) == []
            # every group is exactly the device's extents of its tag, all surfaced
            for g in host.groups:
                assert g.view is not None
                if g.tag != NULL_UUID:
                    mine = np.array([uuid.UUID(bytes=bytes(t)) == g.tag for t in a["tag"]], bool)
                    dev_rows = sorted(zip(a["start"][mine].tolist(), a["length"][mine].tolist()))
                    assert sorted(zip(g.extents["start"].tolist(), g.extents["length"].tolist())) == dev_rows
                    if g.shareable:
                        want = dict(zip(a["start"][mine].tolist(), a["shared_seq"][mine].tolist()))
                        assert all(want[s] == q for s, _, q in group_rows(g))

    @invariant()
    def no_partially_surfaced_group(self):
        for host in self.hosts:
            total = 0
            for g in host.groups:
                rows = group_rows(g)
                total += len(rows)
                assert [q for _, _, q in rows] == sorted(q for _, _, q in rows)
                assert g.hpa.tolist() == [host.hpa_base + s - host.decoder[0] for s, _, _ in rows]
                if g.view is not None:
                    seg = g.view.segments()
                    assert g.view.size == g.size
                    assert seg.host_starts.tolist() == g.hpa.tolist()
                    assert seg.lengths.tolist() == g.extents["length"].tolist()
                    assert [q for _, _, q in rows] == list(range(len(rows)))
                else:
                    assert [q for _, _, q in rows] != list(range(len(rows)))
                if g.dax is not None:
                    assert g.dax in host.dax_devices and g.dax.group is g
            assert total == len(held(host))
            assert sorted((s, n) for g in host.groups for s, n, _ in group_rows(g)) == held(host)

    @invariant()
    def shared_tags_are_the_same_memory_everywhere(self):
        by_tag: Dict[uuid.UUID, List[Host]] = {}
        for h, host in enumerate(self.hosts):
            if h in self.stale:
                continue
            for g in host.groups:
                if g.tag != NULL_UUID and g.view is not None:
                    by_tag.setdefault(g.tag, []).append(host)
        for tag, hosts in by_tag.items():
            if len(hosts) < 2:
                continue
            views = [h.view(tag) for h in hosts]
            assert len({v.size for v in views}) == 1, tag
            check = verify_views(views, [h.media_map() for h in hosts])
            assert check.consistent, (tag, check)


class NonShareableFirstMachine(HostsMachine):
    """The same with the first (the hosts') partition non-shareable."""

    FIRST_SHAREABLE = False


_machine_settings = settings(max_examples=max(10, settings.default.max_examples // 2),
                             stateful_step_count=max(10, settings.default.stateful_step_count * 3 // 5))
HostsMachine.TestCase.settings = _machine_settings
NonShareableFirstMachine.TestCase.settings = _machine_settings
TestHostsShareableFirst = HostsMachine.TestCase
TestHostsNonShareableFirst = NonShareableFirstMachine.TestCase


def test_lose_forgets_a_group_without_telling_the_device():
    """Host.lose: after a forced release the model drops the stale group; no Release DC goes
    out, a claimed group is EBUSY and an unknown tag ENOENT, both changing nothing."""
    import errno as _errno
    dev = device()
    host = Host(dev)
    dev.add_capacity(0, 0, [(0, 2 * MiB), (8 * MiB, 2 * MiB)], tag=TA)
    host.poll()
    dax = host.create_dax(TA)
    with pytest.raises(HostError) as e:
        host.lose(TA, "test")
    assert e.value.errno == _errno.EBUSY and host.group(TA).dax is dax
    dax.resize(0)
    dev.release_capacity(0, 0, policy="tag-based", tag=TA, forced=True)
    host.poll()
    assert held(host) == [(0, 2 * MiB), (8 * MiB, 2 * MiB)]        # K11 ignores forced release
    n = len(dev.log)
    host.lose(TA, "the device took it back")
    assert held(host) == [] and len(dev.log) == n and notes(host, "group_lost")
    with pytest.raises(HostError) as e:
        host.lose(TA, "again")
    assert e.value.errno == _errno.ENOENT


def test_media_map_follows_every_change_of_the_extents():
    """media_map() is built once per change of the host's extents: it is the same object while
    nothing changes, and equals the inverse of the extents after each add and release."""
    dev = device()
    host = Host(dev)

    def inverse():
        return sorted((int(t), int(n), int(s)) for s, n, t, _ in zip(*host._extents.to_arrays()))

    assert len(host.media_map()) == 0
    dev.add_capacity(0, 0, [(0, 2 * MiB), (8 * MiB, 2 * MiB)], tag=TA)
    host.poll()
    first = host.media_map()
    assert host.media_map() is first
    assert sorted((s, n, t) for s, n, t, _ in first) == inverse()
    dev.add_capacity(0, 0, [(16 * MiB, 2 * MiB)])
    host.poll()
    assert sorted((s, n, t) for s, n, t, _ in host.media_map()) == inverse() and len(host.media_map()) == 3
    dev.release_capacity(0, 0, policy="tag-based", tag=TA)
    host.poll()
    assert sorted((s, n, t) for s, n, t, _ in host.media_map()) == inverse() and len(host.media_map()) == 1
