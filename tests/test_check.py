"""``dcdmap check``: traces of QMP commands, DC events, DAX actions and device logs, and what
QEMU or a Linux host would refuse in them (dcdmap/check.py, dcdmap/commands/check.py).

Each known fault is written into a small trace between clean lines and must be found on
its own line, from the right source, with the right rule and errno; the clean lines must
stay clean.  The command is run end to end through ``dcdmap.cli.main`` and its output
parsed.
"""
from __future__ import annotations

import io
import json
import re
import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest

from dcdmap.check import DEFAULT_REGION, CheckReport, Finding, check_lines, read_trace
from dcdmap.cli import main as cli
from dcdmap.cxl import Device, Host, Region
from dcdmap.errors import ConfigurationError, CorruptDataError

MiB = 1 << 20
KiB = 1 << 10
T1 = "00000000-0000-0000-0000-000000000001"
T2 = "00000000-0000-0000-0000-000000000002"
SHAREABLE = [Region(base=0, length=1 << 30, shareable=True)]


# ---------------------------------------------------------------------------------------------
# Trace lines
# ---------------------------------------------------------------------------------------------

def add(*extents: Tuple[int, int], head: int = 0, tag: Optional[str] = None, region: int = 0,
        policy: str = "prescriptive", path: str = "cxl-dcd0") -> str:
    args: Dict[str, Any] = {"path": path, "host-id": head, "selection-policy": policy, "region": region}
    if tag is not None:
        args["tag"] = tag
    args["extents"] = [{"offset": o, "len": n} for o, n in extents]
    return json.dumps({"execute": "cxl-add-dynamic-capacity", "arguments": args})


def release(*extents: Tuple[int, int], head: int = 0, tag: Optional[str] = None, region: int = 0,
            policy: str = "prescriptive", forced: bool = False) -> str:
    args: Dict[str, Any] = {"path": "cxl-dcd0", "host-id": head, "removal-policy": policy}
    if forced:
        args["forced-removal"] = True
    args["region"] = region
    if tag is not None:
        args["tag"] = tag
    args["extents"] = [{"offset": o, "len": n} for o, n in extents]
    return json.dumps({"execute": "cxl-release-dynamic-capacity", "arguments": args})


def event(kind: str, start: int, length: int, **kw: Any) -> str:
    return json.dumps({"type": kind, "start": start, "length": length, **kw})


def dax(action: str, tag: str, **kw: Any) -> str:
    return json.dumps({"dax": action, "tag": tag, **kw})


def found(report: CheckReport) -> List[Tuple[int, str, Optional[str], Optional[str]]]:
    """(line, source, rule, errno) of every finding."""
    return [(f.line, f.source, f.rule, f.errno) for f in report.findings]


def only(report: CheckReport) -> Finding:
    assert len(report.findings) == 1, [str(f) for f in report.findings]
    return report.findings[0]


# ---------------------------------------------------------------------------------------------
# Clean traces
# ---------------------------------------------------------------------------------------------

def test_a_clean_session_has_no_findings_and_leaves_the_capacity_free():
    trace = ["# add, accept, release", "", '{"execute": "qmp_capabilities"}',
             add((0, 2 * MiB), (8 * MiB, 4 * MiB), tag=T1),
             add((32 * MiB, 2 * MiB)),
             release((0, 2 * MiB), (8 * MiB, 4 * MiB)),
             release((32 * MiB, 2 * MiB))]
    report = check_lines(trace)
    assert report.ok and report.findings == []
    assert (report.lines, report.commands, report.events) == (7, 5, 0)
    assert report.state["capacity"] == {"total": 1 << 30, "free": 1 << 30, "pending": 0, "accepted": 0}
    assert report.state["heads"][0]["host"] == {"groups": 0, "bytes": 0, "dax_devices": 0, "staged": 0}


def test_a_clean_session_leaves_what_was_accepted_on_device_and_host():
    report = check_lines([add((0, 2 * MiB), tag=T1), add((4 * MiB, 2 * MiB), tag=T2)])
    assert report.ok
    head = report.state["heads"][0]
    assert (head["accepted_bytes"], head["pending_offers"], head["host"]["groups"]) == (4 * MiB, 0, 2)
    assert isinstance(report.device, Device) and isinstance(report.hosts[0], Host)


def test_a_tag_based_release_and_shared_access_on_two_heads_are_clean():
    """Extended QMP: tag-based release; enable-shared-access gives the tag to head 1."""
    trace = [add((0, 4 * MiB), (16 * MiB, 2 * MiB), tag=T1),
             add(head=1, tag=T1, policy="enable-shared-access"),
             release(head=1, tag=T1, policy="tag-based"),
             release(tag=T1, policy="tag-based")]
    report = check_lines(trace, regions=SHAREABLE, heads=2, seed=4)
    assert report.ok, [str(f) for f in report.findings]
    assert report.state["capacity"]["free"] == 1 << 30


# ---------------------------------------------------------------------------------------------
# QEMU refuses a command (its text, on the command's line)
# ---------------------------------------------------------------------------------------------

QEMU_FAULTS = [
    ("misaligned extent", add((MiB, 2 * MiB)), {}, "dpa or len is not aligned to region block size"),
    ("zero length", add((0, 0)), {}, "extent with 0 length is not allowed"),
    ("past the region end", add(((1 << 30) - 2 * MiB, 4 * MiB)), {}, "extent range is beyond the region end"),
    ("overlapping extents", add((0, 4 * MiB), (2 * MiB, 2 * MiB)), {}, "duplicate or overlapped extents are detected"),
    ("region index", add((0, 2 * MiB), region=1), {}, "region id is too large"),
    ("release of what is not accepted", release((64 * MiB, 2 * MiB)), {},
     "cannot release extent with non-existing DPA range"),
    ("unknown path", add((0, 2 * MiB), path="/machine/peripheral/cxl-dcd9"), {}, "Unable to resolve CXL type 3 device"),
    ("bad QAPI argument", add((0, 2 * MiB)).replace('"region": 0', '"region": "zero"'), {},
     "Parameter 'region' expects uint64"),
    ("missing QAPI argument", add((0, 2 * MiB)).replace('"host-id": 0, ', ""), {}, "Parameter 'host-id' is missing"),
    ("unknown command", '{"execute": "cxl-add-dynamic-capacty"}', {},
     "The command cxl-add-dynamic-capacty has not been found"),
    ("duplicate key (QEMU's parser)", '{"execute": "qmp_capabilities", "execute": "qmp_capabilities"}', {},
     "JSON parse error, duplicate key"),
    ("upstream: free selection", add((0, 2 * MiB), policy="free"), {"upstream": True},
     "Selection policy not supported"),
    ("upstream: forced removal", release((0, 2 * MiB), forced=True), {"upstream": True},
     "Forced removal not supported yet"),
    ("negotiation", add((0, 2 * MiB)), {"negotiate": True},
     "Expecting capabilities negotiation with 'qmp_capabilities'"),
    ("a head the device lacks", add((0, 2 * MiB), head=3), {},
     "host id 3 is not a head of this device (0..0)"),
]


@pytest.mark.parametrize("trace_line, options, desc", [q[1:] for q in QEMU_FAULTS], ids=[q[0] for q in QEMU_FAULTS])
def test_qemu_refusals_are_found_on_their_line(trace_line, options, desc):
    trace = [add((100 * MiB, 2 * MiB)) if not options.get("negotiate") else '{"execute": "qmp_capabilities"}',
             "# the fault:", trace_line, add((200 * MiB, 2 * MiB))]
    if options.get("negotiate"):        # the fault is leaving out qmp_capabilities
        trace = [trace_line, '{"execute": "qmp_capabilities"}', add((200 * MiB, 2 * MiB))]
    report = check_lines(trace, **options)
    f = only(report)
    assert (f.line, f.source) == (1 if options.get("negotiate") else 3, "qemu")
    assert f.message == f"refused by QEMU: {desc}"


def test_adding_dpa_already_accepted_is_refused_on_the_second_add():
    f = only(check_lines([add((0, 2 * MiB)), add((0, 2 * MiB))]))
    assert (f.line, f.source, f.message, f.code) == (
        2, "qemu", "refused by QEMU: cannot add DPA already accessible to the same LD", "GenericError")


def test_adding_dpa_still_pending_needs_a_head_without_a_host():
    """Every host answers at once, so an offer stays pending only on a head that runs no host;
    the same DPA offered to another head is then held by the first."""
    trace = [add((0, 2 * MiB), head=1), add((0, 2 * MiB), head=1), add((0, 2 * MiB), head=0)]
    report = check_lines(trace, heads=2, hosts=[0])
    assert [(f.line, f.message) for f in report.findings] == [
        (2, "refused by QEMU: cannot add DPA again while still pending"),
        (3, "refused by QEMU: cannot add DPA held by another host")]
    assert report.state["heads"][1]["pending_offers"] == 1 and report.state["heads"][1]["host"] is None


# ---------------------------------------------------------------------------------------------
# Linux refuses what QEMU accepted (rule and errno, on the line that made the offer)
# ---------------------------------------------------------------------------------------------

def test_a_tag_reused_in_a_second_chain_is_refused_4a_eexist():
    report = check_lines([add((0, 2 * MiB), tag=T1), add((4 * MiB, 2 * MiB), tag=T1), add((8 * MiB, 2 * MiB), tag=T2)])
    f = only(report)
    assert (f.line, f.source, f.host, f.rule, f.errno) == (2, "linux", 0, "§4.1 4a tag already live", "EEXIST")
    assert f.message.startswith("refused by Linux (host 0): §4.1 4a tag already live (EEXIST): tag " + T1)
    assert report.state["heads"][0]["accepted_bytes"] == 4 * MiB      # the device agrees: not accepted


def test_upstream_qemu_drops_the_tag_so_a_shareable_region_refuses_every_extent():
    trace = [add((0, 2 * MiB), tag=T1)]
    assert check_lines(trace, regions=SHAREABLE).ok
    f = only(check_lines(trace, regions=SHAREABLE, upstream=True))
    assert (f.line, f.source, f.rule, f.errno) == (1, "linux", "§4.1 5 shareable partition needs a tag", "EINVAL")


def test_an_untagged_extent_in_a_shareable_region_is_refused():
    f = only(check_lines([add((0, 2 * MiB))], regions=SHAREABLE))
    assert (f.line, f.source, f.rule, f.errno) == (1, "linux", "§4.1 5 shareable partition needs a tag", "EINVAL")


def test_qemu_valid_but_not_2mib_aligned_is_refused_4d():
    """A 64 KiB block size lets QEMU offer 64 KiB extents; Linux wants PMD (2 MiB) alignment."""
    small = [Region(base=0, length=1 << 30, block_size=64 * KiB)]
    report = check_lines([add((0, 2 * MiB)), add((2 * MiB + 64 * KiB, 64 * KiB))], regions=small)
    f = only(report)
    assert (f.line, f.source, f.errno) == (2, "linux", "EINVAL")
    assert f.rule == "§4.1 4d start or length not aligned to 0x200000"


def test_more_than_100_extents_in_one_command_drop_the_chain():
    trace = [add(*[(i * 4 * MiB, 2 * MiB) for i in range(100)]),
             release(*[(i * 4 * MiB, 2 * MiB) for i in range(100)]),
             add(*[(i * 4 * MiB, 2 * MiB) for i in range(101)])]
    report = check_lines(trace)
    f = only(report)
    assert (f.line, f.source, f.rule, f.errno) == (3, "linux", "§3.7 CXL_DC_MAX_PENDING_EXTENTS", None)
    assert "101 records of the More chain dropped" in f.message
    assert report.state["heads"][0]["pending_offers"] == 0       # the empty Add-Response retired it
    assert report.state["capacity"]["accepted"] == 0


def test_max_pending_option_reaches_the_host():
    trace = [add(*[(i * 4 * MiB, 2 * MiB) for i in range(5)])]
    assert check_lines(trace).ok
    assert found(check_lines(trace, max_pending=4)) == [(1, "linux", "§3.7 CXL_DC_MAX_PENDING_EXTENTS", None)]


def test_a_second_partition_is_outside_the_linux_region():
    regions = [Region(base=0, length=1 << 30), Region(base=1 << 30, length=1 << 30)]
    f = only(check_lines([add((0, 2 * MiB), region=1)], regions=regions))
    assert (f.line, f.source, f.rule, f.errno) == (1, "linux", "§4.1 5 outside the endpoint decoder", "ENXIO")


def test_a_v9_kernel_refuses_tags():
    report = check_lines([add((0, 2 * MiB)), add((4 * MiB, 2 * MiB), tag=T1)], kernel="v9")
    assert found(report) == [(2, "linux", "§4.6 K9: tags not supported", "EINVAL")]


def test_a_forced_release_is_ignored_by_linux_which_keeps_the_capacity():
    report = check_lines([add((0, 2 * MiB), tag=T1), release(tag=T1, policy="tag-based", forced=True)])
    f = only(report)
    assert (f.line, f.source, f.rule) == (2, "linux", "§4.4 forced release is logged and ignored")
    head = report.state["heads"][0]
    assert head["accepted_bytes"] == 0 and head["host"]["bytes"] == 2 * MiB


def test_qemu_refuses_the_add_response_when_pending_extents_count_twice():
    """QEMU: count + tracked > 512, pending counted twice: the 5th chain of 100 extents is
    refused (RESOURCES_EXHAUSTED) and Linux takes its 100 groups offline again (one finding
    for them, counting the others)."""
    trace = [add(*[((k * 100 + i) * 4 * MiB, 2 * MiB) for i in range(100)]) for k in range(5)]
    report = check_lines(trace, regions=[Region(base=0, length=2 << 30)])
    assert [(f.line, f.source, f.code) for f in report.findings] == [
        (5, "qemu", "RESOURCES_EXHAUSTED"), (5, "linux", None)]
    assert report.findings[0].message == "refused by QEMU: host 0's Add-Response: RESOURCES_EXHAUSTED"
    assert report.findings[1].rule == "§4.1 7 the device refused the Add-Response"
    assert report.findings[1].message.endswith("(and 99 more like it)")


def test_a_full_event_log_drops_records_and_linux_times_the_chain_out():
    """QEMU's DC event log holds 8 records: the 9th of one add is dropped, so the chain never
    closes; at the end of the trace Linux's add timeout rejects it."""
    trace = [add(*[(i * 4 * MiB, 2 * MiB) for i in range(9)]), "# nothing more"]
    report = check_lines(trace, upstream=True, event_log_size=8)
    assert [(f.line, f.source, f.rule) for f in report.findings] == [
        (1, "qemu", None), (1, "linux", "§3.7 CXL_DC_ADD_TIMEOUT")]
    assert report.findings[0].message == "refused by QEMU: the event log of head 0 is full: 1 record dropped"
    assert report.state["capacity"]["pending"] == 0


# ---------------------------------------------------------------------------------------------
# DAX claims and releases
# ---------------------------------------------------------------------------------------------

def test_a_release_while_a_dax_device_claims_the_tag_is_deferred_until_it_is_destroyed():
    trace = [add((0, 2 * MiB), (8 * MiB, 2 * MiB), tag=T1), dax("create", T1),
             release((0, 2 * MiB)), dax("destroy", T1), release((0, 2 * MiB))]
    report = check_lines(trace)
    f = only(report)
    assert (f.line, f.source, f.errno) == (3, "linux", "EBUSY")
    assert f.rule == "§4.4 DAX device in use: re-issue after it is destroyed"
    assert report.state["capacity"]["accepted"] == 0          # the re-issued release took the whole group


def test_dax_claims_of_a_refused_group_a_claimed_tag_and_a_missing_device():
    small = [Region(base=0, length=1 << 30, block_size=64 * KiB)]
    trace = [add((64 * KiB, 64 * KiB), tag=T1), dax("create", T1),          # 4d refused: nothing to claim
             add((0, 2 * MiB), tag=T2), dax("create", T2), dax("create", T2),
             dax("destroy", T2), dax("destroy", T2)]
    report = check_lines(trace, regions=small)
    assert found(report) == [(1, "linux", "§4.1 4d start or length not aligned to 0x200000", "EINVAL"),
                             (2, "linux", f"no capacity with tag {T1}", "ENOENT"),
                             (5, "linux", f"tag {T2} is claimed by dax0.1", "EBUSY"),
                             (7, "input", None, None)]
    assert report.findings[1].message == f"refused by Linux (host 0): no capacity with tag {T1} (ENOENT)"
    assert report.findings[3].message == f"nothing to destroy: no DAX device of host 0 claims tag {T2}"
    assert found(check_lines([add((0, 2 * MiB)), dax("create", "0"), dax("destroy", "0")])) == []


# ---------------------------------------------------------------------------------------------
# DC event lines
# ---------------------------------------------------------------------------------------------

def test_dc_events_in_the_events_view_form_are_clean_when_linux_takes_them():
    trace = [event("ADD_CAPACITY", 0, 2 * MiB, tag=T1, more=True),
             event("add-capacity", 4 * MiB, 2 * MiB, tag=T1, seq=0, more=False, head=0, region=0),
             event("RELEASE_CAPACITY", 4 * MiB, 2 * MiB, tag=T1)]
    report = check_lines(trace)
    assert report.ok and report.events == 3
    assert report.state["capacity"]["accepted"] == 0


def test_the_events_a_device_view_shows_check_clean():
    """The form is Device.events_view's: its rows are trace lines."""
    dev = Device([Region(base=0, length=1 << 30, shareable=True)])
    dev.add_capacity(0, 0, [(0, 2 * MiB), (4 * MiB, 2 * MiB)], tag=uuid.UUID(T1))
    trace = [json.dumps(row) for row in dev.events_view(0)]
    assert check_lines(trace, regions=SHAREABLE).ok


def test_dc_events_a_tag_reused_in_a_second_chain_is_refused_on_its_closing_line():
    trace = [event("ADD_CAPACITY", 0, 2 * MiB, tag=T1),
             event("ADD_CAPACITY", 4 * MiB, 2 * MiB, tag=T1, more=True),
             event("ADD_CAPACITY", 8 * MiB, 2 * MiB, tag=T1)]
    assert found(check_lines(trace)) == [(3, "linux", "§4.1 4a tag already live", "EEXIST")]


def test_dc_events_shareable_sequence_numbers_must_be_0_to_n_minus_1():
    trace = [event("ADD_CAPACITY", 0, 2 * MiB, tag=T1, seq=1, more=True),
             event("ADD_CAPACITY", 4 * MiB, 2 * MiB, tag=T1, seq=1)]
    assert found(check_lines(trace, regions=SHAREABLE)) == [
        (2, "linux", "§4.1 4b sequence numbers are not 0..n-1", "EINVAL")]
    ok = [trace[0], trace[1].replace('"seq": 1', '"seq": 0')]
    assert check_lines(ok, regions=SHAREABLE).ok


def test_dc_events_a_sequence_number_on_a_non_shareable_region_is_refused():
    trace = [event("ADD_CAPACITY", 0, 2 * MiB, seq=3)]
    assert found(check_lines(trace)) == [(1, "linux", "§4.1 5 sequence number on a non-shareable partition", "EINVAL")]


def test_dc_events_the_device_must_be_able_to_offer_the_chain():
    """The device makes the offer the host answers; a chain it could not offer (misaligned to
    its block size) is reported and not given to Linux."""
    trace = [event("ADD_CAPACITY", 0, 2 * MiB, more=True), event("ADD_CAPACITY", 3 * MiB, 2 * MiB)]
    f = only(check_lines(trace))
    assert (f.line, f.source, f.host) == (2, "device", 0)
    assert f.message == ("refused by the device: it cannot offer the chain of lines 1-2: dpa or len is not "
                         "aligned to region block size; not given to Linux")


def test_dc_events_a_release_of_capacity_not_accepted_cannot_be_sent():
    trace = [event("ADD_CAPACITY", 0, 2 * MiB), event("RELEASE_CAPACITY", 8 * MiB, 2 * MiB)]
    f = only(check_lines(trace))
    assert (f.line, f.source) == (2, "device")
    assert "cannot release extent with non-existing DPA range" in f.message


def test_releasing_every_extent_of_a_group_is_clean_though_linux_refuses_the_later_records():
    """§4.4: the first Release record takes the whole tag group back; Linux refuses the
    group's other records (EINVAL), which name nothing anyone holds any more: not a finding."""
    report = check_lines([add((0, 2 * MiB), (8 * MiB, 2 * MiB), tag=T1), release(tag=T1, policy="tag-based")])
    assert report.ok and report.state["capacity"]["accepted"] == 0
    assert [n["errno"] for n in report.hosts[0].log if n["event"] == "release_refused"] == ["EINVAL"]


def test_dc_events_a_release_with_another_tag_is_refused_by_linux():
    trace = [event("ADD_CAPACITY", 0, 2 * MiB, tag=T1), event("RELEASE_CAPACITY", 0, 2 * MiB, tag=T2)]
    assert found(check_lines(trace)) == [(2, "linux", "§4.4 no extent of this tag contains the range", "EINVAL")]


def test_dc_events_a_chain_left_open_times_out_on_its_last_line():
    trace = [event("ADD_CAPACITY", 0, 2 * MiB, more=True), event("ADD_CAPACITY", 4 * MiB, 2 * MiB, more=True), ""]
    report = check_lines(trace)
    assert found(report) == [(2, "linux", "§3.7 CXL_DC_ADD_TIMEOUT", None)]
    assert report.state["heads"][0]["pending_offers"] == 0 and report.state["capacity"]["pending"] == 0


def test_dc_events_forced_release_and_region_update():
    trace = [event("ADD_CAPACITY", 0, 2 * MiB, tag=T1), event("FORCED_CAPACITY_RELEASE", 0, 2 * MiB, tag=T1),
             event("REGION_CONFIGURATION_UPDATED", 0, 0)]
    assert found(check_lines(trace)) == [(2, "linux", "§4.4 forced release is logged and ignored", None),
                                         (3, "linux", "§4.4 only add and release are handled", None)]


def test_dc_event_lines_are_not_cut_by_the_event_log_size():
    trace = [event("ADD_CAPACITY", i * 4 * MiB, 2 * MiB, more=i < 9) for i in range(10)]
    report = check_lines(trace, event_log_size=8)
    assert report.ok and report.state["heads"][0]["accepted_bytes"] == 20 * MiB


MALFORMED_EVENTS = [
    ({"type": "ADD", "start": 0, "length": 2 * MiB}, "unknown DC event type 'ADD'"),
    ({"type": "ADD_CAPACITY", "start": 0}, "DC event lacks member 'length'"),
    ({"type": "ADD_CAPACITY", "start": 0, "length": 2 * MiB, "flags": 1}, "DC event member 'flags' is unexpected"),
    ({"type": "ADD_CAPACITY", "start": 0, "length": 2 * MiB, "tag": "x"}, "DC event tag 'x' is not a UUID"),
    ({"type": "ADD_CAPACITY", "start": 0, "length": 2 * MiB, "head": 1}, "head 1 has no Linux host"),
    ({"type": "ADD_CAPACITY", "start": "0", "length": 2 * MiB}, "expected an int, got str"),
    ({"type": "ADD_CAPACITY", "start": 0, "length": 2 * MiB, "seq": 1 << 16}, "does not fit in an unsigned 16-bit"),
    ({"dax": "resize", "tag": "0"}, "DAX action 'resize' is not one of create, destroy"),
    ({"dax": "create"}, "a DAX action needs a tag"),
    ({"dax": "create", "tag": "0", "size": 0}, "DAX action member 'size' is unexpected"),
]


@pytest.mark.parametrize("obj, why", MALFORMED_EVENTS, ids=[w for _, w in MALFORMED_EVENTS])
def test_malformed_event_and_dax_lines_are_input_findings(obj, why):
    report = check_lines([add((0, 2 * MiB)), json.dumps(obj), add((4 * MiB, 2 * MiB))])
    f = only(report)
    assert (f.line, f.source) == (2, "input")
    assert f.message.startswith("not a QMP command or DC event: ") and why in f.message


# ---------------------------------------------------------------------------------------------
# Malformed lines and device logs
# ---------------------------------------------------------------------------------------------

def test_malformed_lines_are_reported_with_their_line_numbers_and_checking_goes_on():
    trace = [add((0, 2 * MiB)), '{"execute": "qmp_capabilities"', "[1, 2]", '{"hello": 1}', "   # comment",
             add((MiB, 2 * MiB))]
    report = check_lines(trace)
    assert [(f.line, f.source) for f in report.findings] == [(2, "input"), (3, "input"), (4, "input"), (6, "qemu")]
    assert report.findings[0].message.startswith("not a QMP command or DC event: not JSON (")
    assert report.findings[1].message == "not a QMP command or DC event: a JSON list, not an object"
    assert "no 'execute', 'type', 'dax' or 'op' member" in report.findings[2].message


def device_log() -> List[str]:
    """A session on a device with a host: two offers of one tag (Linux refuses the second)
    and a request the device refused."""
    dev = Device([Region(base=0, length=1 << 30, shareable=True)], heads=2, seed=3)
    host = Host(dev, 0)
    dev.add_capacity(0, 0, policy="free", length=8 * MiB, tag=uuid.UUID(T1))
    host.poll()
    dev.add_capacity(0, 0, policy="free", length=4 * MiB, tag=uuid.UUID(T1))
    host.poll()
    with pytest.raises(Exception):
        dev.add_capacity(0, 0, [(MiB, MiB)])
    out = io.StringIO()
    dev.write_log(out)
    return out.getvalue().splitlines()


def test_a_device_log_configures_the_device_and_its_requests_are_checked():
    log = device_log()
    ops = [json.loads(line)["op"] for line in log]
    report = check_lines(log)
    second, refused = [i + 1 for i, op in enumerate(ops) if op == "add_capacity"][1:]
    assert [(f.line, f.source, f.errno) for f in report.findings] == [
        (second, "linux", "EEXIST"), (refused, "qemu", None)]
    assert report.log_entries == len(log) and report.device.nheads == 2


def test_a_device_log_checked_as_upstream_qemu_loses_its_tags():
    report = check_lines(device_log(), upstream=True)
    assert {f.rule for f in report.findings if f.source == "linux"} == {"§4.1 5 shareable partition needs a tag"}


def test_a_device_entry_with_device_options_is_an_error_and_a_late_one_a_finding():
    log = device_log()
    with pytest.raises(ConfigurationError, match="line 1: the trace's device entry configures the device"):
        check_lines(log, heads=2)
    report = check_lines([add((0, 2 * MiB))] + log[:1] + ['{"op": "add_capacty"}'])
    assert [(f.line, f.source) for f in report.findings] == [(2, "input"), (3, "input")]
    assert "must be the first entry" in report.findings[0].message
    assert "unknown device log operation 'add_capacty'" in report.findings[1].message
    with pytest.raises(CorruptDataError, match="line 1: the device entry does not replay"):
        check_lines([log[0].replace('"version":1', '"version":99')])


@pytest.mark.parametrize("upstream", [False, True])
def test_device_log_entries_that_say_nothing_are_input_findings(upstream):
    entries = [{"op": "add_capacity"},                                            # no head, no region
               {"op": "add_capacity", "head": 0, "region": 0, "policy": "FREE"}]  # no extents to resolve
    report = check_lines([json.dumps(e) for e in entries], upstream=upstream)
    assert [f.line for f in report.findings] == [1, 2]
    assert report.findings[0].source == "input"
    assert report.findings[1].source == "qemu"     # kept as made: upstream QEMU refuses "free" too


def test_ignored_commands_are_counted_and_skipped():
    trace = ['{"execute": "query-status"}', add((0, 2 * MiB))]
    assert found(check_lines(trace))[0][:2] == (1, "qemu")
    report = check_lines(trace, ignore_commands=["query-status"])
    assert report.ok and (report.ignored, report.commands) == (1, 1)


def test_bad_configurations_raise():
    with pytest.raises(ConfigurationError):
        check_lines([], hosts=[1])
    with pytest.raises(ConfigurationError):
        check_lines([], kernel="v12")
    report = check_lines([])
    assert report.ok and report.lines == 0 and report.device.regions[0].length == DEFAULT_REGION.length


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------

LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+): (?P<message>.+)$")
SUMMARY = re.compile(r"^(?P<file>.+): (?P<n>\d+) findings? in (?P<lines>\d+) lines \((?P<cmds>\d+) QMP commands, ")


def run(capsys, *argv: str) -> Tuple[int, str, str]:
    code = cli(["check", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path, lines: Sequence[str], name: str = "trace.jsonl") -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_command_prints_one_line_per_finding_and_a_summary(tmp_path, capsys):
    path = write(tmp_path, ["# session", add((0, 2 * MiB), tag=T1), add((MiB, 2 * MiB)),
                            add((4 * MiB, 2 * MiB), tag=T1), "not json"])
    code, out, err = run(capsys, path)
    assert code == 1 and err == ""
    *findings, summary = out.splitlines()
    parsed = [LINE.match(line).groupdict() for line in findings]
    assert [(p["file"], int(p["line"])) for p in parsed] == [(path, 3), (path, 4), (path, 5)]
    assert parsed[0]["message"] == "refused by QEMU: dpa or len is not aligned to region block size"
    assert parsed[1]["message"].startswith("refused by Linux (host 0): §4.1 4a tag already live (EEXIST)")
    assert parsed[2]["message"].startswith("not a QMP command or DC event: not JSON")
    s = SUMMARY.match(summary)
    assert s and (s["file"], s["n"], s["lines"], s["cmds"]) == (path, "3", "5", "3")


def test_command_exit_0_for_a_clean_trace(tmp_path, capsys):
    code, out, err = run(capsys, write(tmp_path, [add((0, 2 * MiB)), release((0, 2 * MiB))]))
    assert (code, err) == (0, "")
    assert out.splitlines() == [f"{tmp_path / 'trace.jsonl'}: 0 findings in 2 lines (2 QMP commands, 0 ignored, "
                                "0 DC events, 0 DAX actions, 0 log entries)"]


def test_command_json(tmp_path, capsys):
    path = write(tmp_path, [add((0, 2 * MiB), tag=T1), add((4 * MiB, 2 * MiB), tag=T1)])
    code, out, err = run(capsys, "--json", path)
    assert code == 1
    doc = json.loads(out)
    assert (doc["file"], doc["ok"], doc["lines"], doc["commands"]) == (path, False, 2, 2)
    assert doc["findings"] == [{"line": 2, "source": "linux", "host": 0, "rule": "§4.1 4a tag already live",
                                "errno": "EEXIST", "code": None, "message": doc["findings"][0]["message"]}]
    assert doc["state"]["heads"][0]["accepted_bytes"] == 2 * MiB


def test_command_options_reach_the_models(tmp_path, capsys):
    path = write(tmp_path, [add((0, 2 * MiB), tag=T1, head=1), add((64 * KiB, 64 * KiB))])
    code, out, _ = run(capsys, "--region", "0:1G:64K:shareable", "--heads", "2", "--hosts", "1", "--json", path)
    doc = json.loads(out)
    # Head 1's host took the tagged 2 MiB; the 64 KiB block of it offered to head 0 is held.
    assert [(f["line"], f["source"], f["message"]) for f in doc["findings"]] == [
        (2, "qemu", "refused by QEMU: cannot add DPA held by another host")]
    assert doc["state"]["heads"][1]["host"]["groups"] == 1 and doc["state"]["heads"][0]["host"] is None
    code, out, _ = run(capsys, "--upstream", "--kernel", "v10", "--path", "/machine/peripheral/dcd", path)
    assert code == 1 and "Unable to resolve CXL type 3 device" in out


def test_command_reads_standard_input(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(add((MiB, 2 * MiB)) + "\n"))
    code, out, _ = run(capsys, "-")
    assert code == 1 and out.startswith("<stdin>:1: refused by QEMU: ")


def test_command_missing_file_is_one_error_line(tmp_path, capsys):
    code, out, err = run(capsys, str(tmp_path / "nope.jsonl"))
    assert (code, out) == (1, "")
    assert err.splitlines() == [f"dcdmap check: error: No such file or directory: {tmp_path / 'nope.jsonl'}"]


def test_command_non_utf8_file_is_one_error_line_naming_the_line(tmp_path, capsys):
    path = tmp_path / "bin.jsonl"
    path.write_bytes(add((0, 2 * MiB)).encode() + b"\n\n{\"type\": \"\xff\"}\n")
    code, out, err = run(capsys, str(path))
    assert (code, out) == (1, "")
    assert err.splitlines() == [f"dcdmap check: error: {path}:3: not UTF-8 text (byte 0xff: invalid start byte)"]
    assert "Traceback" not in err


def test_command_bad_configuration_is_one_error_line(tmp_path, capsys):
    code, out, err = run(capsys, "--region", "1M:1G", write(tmp_path, []))
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("dcdmap check: error: region 0")
    with pytest.raises(SystemExit) as e:
        cli(["check", "--region", "0:1G:2M:bogus", "x"])
    assert e.value.code == 2


def test_command_help_shows_examples(capsys):
    with pytest.raises(SystemExit) as e:
        cli(["check", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "examples:" in out and "dcdmap check session.jsonl" in out and "--upstream" in out
    assert "Exit status" in out


def test_read_trace_keeps_line_numbers(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes("\ufeff{\"a\": \"\u2028\"}\r\n\nlast".encode("utf-8"))
    assert read_trace(str(path)) == ['{"a": "\u2028"}\r', "", "last"]

