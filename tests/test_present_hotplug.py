"""ACPI DIMM hot-plug presentation (dcdmap.present.hotplug; presentations.md §1a, §1b).

Scenario tests name the rule they check; every refused operation is checked to leave the
presentation and the host unchanged; a Hypothesis property checks translation, overlap and
removal over random tag groups.
"""
from __future__ import annotations

import copy
import dataclasses
import errno as E
import uuid

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcdmap.cxl import Device, Host, Region
from dcdmap.errors import ConfigurationError, HostError
from dcdmap.present.base import BEST_EFFORT
from dcdmap.present.hotplug import HotplugPresentation

MiB, GiB = 1 << 20, 1 << 30


class Rig:
    """One device, one host, and a helper that offers tagged capacity."""

    def __init__(self, shareable: bool = False, seed: int = 1) -> None:
        self.dev = Device([Region(base=0, length=16 * GiB, shareable=shareable)], seed=seed)
        self.host = Host(self.dev)
        self.n = 0
        self.cursor = 0

    def group(self, *lengths: int):
        """A new tag group of the given extent lengths, at scattered DPAs, offered in an order
        that differs from DPA order (so the view is piecewise and permuted)."""
        self.n += 1
        tag = uuid.UUID(int=self.n)
        pieces = []
        for n in lengths:
            pieces.append((self.cursor, n))
            self.cursor += n + 2 * MiB                      # a gap: extents are not adjacent
        pieces = pieces[1:] + pieces[:1]
        self.dev.add_capacity(0, 0, pieces, tag=tag)
        self.host.poll()
        return self.host.group(tag)


def vm(rig: Rig, **kw) -> HotplugPresentation:
    args = dict(ram=4 * GiB, slots=8, maxmem=12 * GiB)
    args.update(kw)
    return HotplugPresentation(rig.host, **args)


def snapshot(p: HotplugPresentation):
    return (tuple(tuple(a.tolist()) for a in p.gas.map.to_arrays()),
            tuple(tuple(a.tolist()) for a in p.gas.reserved.to_arrays()),
            copy.deepcopy(p.guest_objects()), dataclasses.asdict(p.metrics),
            dict(p.blocks.state), dict(p.blocks.zone), len(p.log),
            [d.name for d in p.host.dax_devices], [g.dax is None for g in p.host.groups])


def refused(p: HotplugPresentation, fn, errno=None, match=None):
    """Call fn, expect HostError (errno, text), and check nothing changed."""
    before = snapshot(p)
    with pytest.raises(HostError, match=match) as ei:
        fn()
    if errno is not None:
        assert ei.value.errno == errno
    assert snapshot(p) == before
    return ei.value


# ---------------------------------------------------------------- -m rules and the layout

@pytest.mark.parametrize("kw, text", [
    (dict(ram=4 * GiB, maxmem=2 * GiB), "must be at least the initial memory size"),     # maxmem < ram
    (dict(ram=4 * GiB, slots=2, maxmem=4 * GiB), "memory slots were specified"),         # slots, maxmem == ram
    (dict(ram=4 * GiB, slots=2), "slots specified but no max-size"),                    # slots without maxmem
    (dict(ram=4 * GiB, slots=257, maxmem=8 * GiB), "unsupported amount of memory slots"),  # > ACPI_MAX_RAM_SLOTS
    (dict(ram=4 * GiB, slots=2, maxmem=8 * GiB + 512), "aligned to multiple of 0x1000"),  # maxmem page aligned
    (dict(ram=4 * GiB, slots=2, maxmem=1 << 46), "unsupported amount of maximum memory"),  # past phys bits
    (dict(ram=0), "positive"),
    (dict(ram=4 * GiB, slots=-1, maxmem=8 * GiB), "non-negative"),
    (dict(ram=4 * GiB, slots=2, maxmem=8 * GiB, kmem=True, soft_reserved=False), "kmem needs soft_reserved"),
    (dict(ram=4 * GiB, slots=2, maxmem=8 * GiB, align=3 * MiB), "power of two"),
])
def test_m_option_rules(kw, text):
    with pytest.raises(ConfigurationError, match=text):
        HotplugPresentation(Rig().host, **kw)


def test_m_option_accepts_edge_values():
    rig = Rig()
    p = HotplugPresentation(rig.host, ram=4 * GiB + 1, slots=256, maxmem=64 * GiB)   # 256 slots is the max
    assert p.ram == 4 * GiB + 8 * 1024                                                # ram rounded to 8 KiB
    q = HotplugPresentation(rig.host, ram=4 * GiB, maxmem=8 * GiB)                    # maxmem, no slots: allowed
    assert q.slots == 0 and q.device_size == 4 * GiB


@pytest.mark.parametrize("ram, below, base, end", [
    (2 * GiB, 2 * GiB, 4 * GiB, 2 * GiB),                        # all below the hole; region at 4 GiB
    (0xA000_0000, 0xA000_0000, 4 * GiB, 0xA000_0000),            # < 2.75 GiB: all low
    (8 * GiB, 2 * GiB, 10 * GiB, 10 * GiB),                      # >= 2.75 GiB: 2 GiB low, rest from 4 GiB
    (4 * GiB + 256 * MiB, 2 * GiB, 7 * GiB, 6 * GiB + 256 * MiB),  # region base rounded up to 1 GiB
])
def test_layout_q35_hole_and_device_region_base(ram, below, base, end):
    p = HotplugPresentation(Rig().host, ram=ram, slots=4, maxmem=ram + 8 * GiB)
    assert (p.below_4g, p.device_base, p.boot_mem_end) == (below, base, end)
    assert p.device_size == 8 * GiB + 4 * GiB                    # (maxmem - ram) + 1 GiB per slot
    assert p.gas.base == base and p.gas.size == p.device_size


def test_layout_legacy_no_slot_slack_and_block_size_from_boot_mem_end():
    rig = Rig()
    assert HotplugPresentation(rig.host, ram=4 * GiB, slots=4, maxmem=8 * GiB,
                               enforce_aligned_dimm=False).device_size == 4 * GiB
    assert HotplugPresentation(rig.host, ram=4 * GiB, slots=1, maxmem=8 * GiB).block_size == 128 * MiB
    big = HotplugPresentation(rig.host, ram=96 * GiB, slots=1, maxmem=100 * GiB)
    assert big.boot_mem_end == 98 * GiB and big.block_size == 2 * GiB       # x86_memory_block_size(98 GiB)


# ---------------------------------------------------------------- QEMU plug checks

def test_slots_lowest_free_busy_invalid_and_none_free():
    rig = Rig()
    p = vm(rig, slots=3)
    a, b, c = rig.group(64 * MiB), rig.group(64 * MiB), rig.group(64 * MiB)
    assert p.add(a)["slot"] == 0
    assert p.add(b, slot=2)["slot"] == 2
    refused(p, lambda: p.add(c, slot=2), E.EBUSY, "slot 2 is busy")
    refused(p, lambda: p.add(c, slot=3), E.EINVAL, r"invalid slot number 3, valid range is \[0-2\]")
    assert p.add(c)["slot"] == 1                                 # automatic: lowest free
    d = rig.group(64 * MiB)
    refused(p, lambda: p.add(d), E.ENOSPC, "no free slots available")
    p.remove(a.tag)
    assert p.add(d)["slot"] == 0


def test_no_slots_allocated():
    rig = Rig()
    p = HotplugPresentation(rig.host, ram=4 * GiB, maxmem=8 * GiB)                # maxmem, slots=0
    new = rig.group(64 * MiB)
    refused(p, lambda: p.add(new), E.ENOSPC, "no slots where allocated")
    q = HotplugPresentation(rig.host, ram=4 * GiB)                                 # no device memory at all
    new = rig.group(64 * MiB)
    refused(q, lambda: q.add(new), E.ENOSPC, "no slots where allocated")


def test_not_enough_space_counts_plugged_against_maxmem_minus_ram():
    rig = Rig()
    p = vm(rig, maxmem=5 * GiB)                                  # 1 GiB for DIMMs (+ 8 GiB slack)
    p.add(rig.group(512 * MiB))
    p.add(rig.group(256 * MiB, 128 * MiB))
    new = rig.group(256 * MiB)
    refused(p, lambda: p.add(new), E.ENOSPC, "not enough space, currently 0x38000000 in use of total space for memory devices 0x40000000")
    p.add(rig.group(128 * MiB))                                  # exactly full
    assert sum(d["size"] for d in p.dimms()) == 1 * GiB


def test_slot_check_comes_before_space_check():
    rig = Rig()
    p = vm(rig, slots=1, maxmem=5 * GiB)
    p.add(rig.group(1 * GiB))
    new = rig.group(2 * MiB)
    refused(p, lambda: p.add(new), E.ENOSPC, "no free slots")


def test_alignment_rules():
    rig = Rig()
    p = vm(rig)
    g = rig.group(512 * MiB)
    # size must be a multiple of the backend page size
    refused(p, lambda: p.add(g, align=1 * GiB), E.EINVAL, "backend memory size must be multiple of 0x40000000")
    # the region base must be aligned to it (base 7 GiB, 2 GiB pages)
    q = HotplugPresentation(rig.host, ram=5 * GiB, slots=2, maxmem=12 * GiB)
    assert q.device_base == 7 * GiB
    new = rig.group(2 * GiB)
    refused(q, lambda: q.add(new, align=2 * GiB), E.EINVAL, r"alignment \(0x80000000\) is not supported")
    # a requested address must be aligned, inside the region, and free
    refused(p, lambda: p.add(g, addr=p.device_base + 1 * MiB), E.EINVAL, "address must be aligned to 0x200000")
    refused(p, lambda: p.add(g, addr=p.device_base - 2 * MiB), E.EINVAL, "can't add memory device")
    refused(p, lambda: p.add(g, addr=p.device_base + p.device_size - 256 * MiB), E.EINVAL, "usable range")
    p.add(g, addr=p.device_base + 1 * GiB)
    h = rig.group(2 * GiB)
    refused(p, lambda: p.add(h, addr=p.device_base + 1 * GiB - 2 * MiB), E.EEXIST,
            "address range conflicts with memory device id='dimm1'")


@pytest.mark.parametrize("legacy", [False, True])
def test_backend_align_must_be_a_page_multiple_power_of_two(legacy):
    # file_ram_alloc at object_add: align % page size, power of two; before the slot check,
    # also on legacy machine types (where the placement uses 4 KiB regardless).
    rig = Rig()
    p = vm(rig, slots=1, enforce_aligned_dimm=not legacy)
    g = rig.group(64 * MiB)
    for bad in (2048, 1, 3 * MiB, 0):
        refused(p, lambda: p.add(g, align=bad), E.EINVAL, "must be a power of two and a multiple of the page size")
    p.add(g, align=4096)
    new = rig.group(64 * MiB)
    refused(p, lambda: p.add(new, align=2048), E.EINVAL, "power of two")    # backend first, then the slot


def test_first_fit_placement_realigns_after_each_dimm_and_slack_is_used_gpa():
    rig = Rig()
    p = vm(rig)
    a = p.add(rig.group(2 * MiB))
    b = p.add(rig.group(1 * GiB), align=1 * GiB)                 # a 1 GiB-page backend
    c = p.add(rig.group(4 * MiB))                                # fills the hole after a
    assert a["gpa"] == p.device_base
    assert b["gpa"] == p.device_base + 1 * GiB
    assert c["gpa"] == p.device_base + 2 * MiB
    m = p.metrics
    assert m.gpa_used == 1 * GiB + 2 * MiB + 4 * MiB + 0           # the hole is still usable: no slack
    d = p.add(rig.group(1 * GiB - 6 * MiB), align=2 * MiB)
    assert d["gpa"] == p.device_base + 6 * MiB
    assert p.metrics.gpa_used == 2 * GiB and p.metrics.gpa_wasted == 0


def test_alignment_slack_counts_when_unusable_at_the_default_alignment():
    rig = Rig()
    p = vm(rig, align=64 * MiB)
    p.add(rig.group(64 * MiB))
    p.add(rig.group(1 * GiB), align=1 * GiB)                     # leaves 960 MiB: 15 default DIMMs fit
    assert p.metrics.gpa_used == 2 * GiB - 960 * MiB
    rig2 = Rig()
    q = vm(rig2, align=1 * GiB)
    q.add(rig2.group(2 * MiB), align=2 * MiB)
    q.add(rig2.group(1 * GiB))                                   # 1022 MiB below: no 1 GiB DIMM fits
    assert q.metrics.gpa_used == 2 * GiB and q.metrics.gpa_wasted == 1 * GiB - 2 * MiB


def test_memory_fragmented_due_to_alignments():
    rig = Rig()
    p = vm(rig, ram=4 * GiB, maxmem=6 * GiB, enforce_aligned_dimm=False)   # 2 GiB region, no slack
    gs = [rig.group(512 * MiB) for _ in range(4)]
    for g in gs:
        p.add(g)
    p.remove(gs[0].tag)
    p.remove(gs[2].tag)                                          # two 512 MiB holes, 1 GiB free
    new = rig.group(1 * GiB)
    refused(p, lambda: p.add(new), E.ENOSPC, "memory fragmented due to alignments")
    assert p.add(rig.group(512 * MiB))["gpa"] == p.device_base      # first fit: the lowest hole


def test_backend_checks_tag_group_and_host_dax():
    rig = Rig()
    p = vm(rig)
    g = rig.group(64 * MiB)
    rig.host.create_dax(g.tag)                                   # someone else uses the DAX device
    refused(p, lambda: p.add(g), E.EBUSY, "is busy")
    rig.host.destroy_dax(rig.host.dax_devices[0])
    p.add(g)
    assert [d.uuid for d in rig.host.dax_devices] == [g.tag]     # memory-backend-file on its DAX device
    refused(p, lambda: p.add(g), E.EBUSY, "already plugged")
    stale = dataclasses.replace(g)
    refused(p, lambda: p.add(stale), E.EBUSY)                    # tag already plugged wins
    p2 = vm(rig)
    new = rig.group(64 * MiB)
    refused(p2, lambda: p2.add(dataclasses.replace(new)), E.ESTALE, "not the host's live group")
    refused(p, lambda: p.remove(uuid.UUID(int=999)), E.ENOENT, "no DIMM presents tag")
    refused(p, lambda: p.remove("not-a-uuid"), E.EINVAL, "is not a UUID")


def test_host_release_is_deferred_while_the_dimm_holds_the_dax_device():
    rig = Rig()
    p = vm(rig)
    g = rig.group(64 * MiB)
    p.add(g)
    start, length = int(g.extents["start"][0]), int(g.extents["length"][0])
    rig.dev.release_capacity(0, 0, [(start, length)])
    rig.host.poll()
    assert rig.host.group(g.tag) is g                            # still live
    assert any(e["event"] == "release_deferred" for e in rig.host.log)
    assert p.remove(g.tag).complete
    assert not rig.host.dax_devices


# ---------------------------------------------------------------- the guest side

def test_no_sp_add_memory_einval_for_dimms_not_aligned_to_the_memory_block():
    rig = Rig()
    p = vm(rig, soft_reserved=False)                             # 128 MiB blocks
    a = p.add(rig.group(64 * MiB))                               # size not a block multiple
    b = p.add(rig.group(128 * MiB))                              # starts at +64 MiB: start unaligned
    assert a["state"] == b["state"] == "add_memory failed"
    assert [e["errno"] for e in p.log if e["event"] == "add_memory_failed"] == ["EINVAL", "EINVAL"]
    assert p.metrics.presented == 0 and p.metrics.gpa_wasted == 192 * MiB
    assert p.metrics.objects == {"dimm": 2, "dax_device": 0, "memory_block": 0}
    c = p.add(rig.group(256 * MiB), addr=p.device_base + 256 * MiB)
    assert c["state"] == "system-ram"
    blocks = [o for o in p.guest_objects() if o["kind"] == "memory_block"]
    assert [o["gpa"] for o in blocks] == [p.device_base + 256 * MiB, p.device_base + 384 * MiB]
    assert p.metrics.presented == 256 * MiB
    assert not p.metrics.shared_out_of_ram
    assert a["tag"] is None                                      # no tag extension: R1 fails
    assert p.remove(uuid.UUID(int=1)).complete                   # nothing to offline: ejects


@pytest.mark.parametrize("auto_online, policy, state, zone", [
    ("online", "contig-zones", "online", "Normal"),
    ("online", "auto-movable", "online", "Movable"),
    ("online_movable", "contig-zones", "online", "Movable"),
    ("online_kernel", "auto-movable", "online", "Normal"),
    ("offline", "contig-zones", "offline", None),
])
def test_online_policy_zones(auto_online, policy, state, zone):
    rig = Rig()
    p = vm(rig, soft_reserved=False, auto_online=auto_online, online_policy=policy)
    p.add(rig.group(256 * MiB))
    blocks = [o for o in p.guest_objects() if o["kind"] == "memory_block"]
    assert [(o["state"], o["zone"]) for o in blocks] == [(state, zone)] * 2
    assert p.metrics.presented == 256 * MiB                      # added memory is reachable


def test_soft_reserved_goes_to_hmem_devdax_not_system_ram():
    rig = Rig(shareable=True)
    p = vm(rig, tag_extension=True)
    g = rig.group(96 * MiB, 32 * MiB)
    assert g.shareable
    p.add(g)
    objs = p.guest_objects()
    assert [(o["kind"], o["state"], o["tag"]) for o in objs] == [("dimm", "devdax", g.tag),
                                                                  ("dax_device", "devdax", g.tag)]
    assert not p.blocks.state                                    # nothing in System RAM
    m = p.metrics
    assert m.shared_out_of_ram and m.tag_discoverable            # R3, R1 with the extension
    assert m.presented == 128 * MiB and m.removal == BEST_EFFORT
    assert any("device-dax" in r for r in m.removal_risks)


def test_hmem_refuses_a_range_not_aligned_to_2mib():
    rig = Rig()
    p = vm(rig, enforce_aligned_dimm=False)                      # legacy: 4 KiB DIMM alignment
    d = p.add(rig.group(64 * MiB), addr=p.device_base + 4096)
    assert d["state"] == "hmem refused"
    assert p.metrics.objects["dax_device"] == 0 and p.metrics.presented == 0
    assert p.metrics.gpa_wasted == 64 * MiB                       # the 4 KiB below still fits a 4 KiB DIMM


def test_kmem_onlines_devdax_as_system_ram_trimmed_to_blocks():
    rig = Rig()
    p = vm(rig, kmem=True, auto_online="online_movable")
    a = p.add(rig.group(192 * MiB))                              # [base, +192M): trimmed to 128 MiB
    assert a["state"] == "kmem"
    b = p.add(rig.group(64 * MiB))                               # [+192M, +256M): nothing left
    assert b["state"] == "kmem too small"
    kinds = [(o["kind"], o["state"]) for o in p.guest_objects()]
    assert kinds == [("dimm", "kmem"), ("dax_device", "system-ram"), ("memory_block", "online"),
                     ("dimm", "kmem too small"), ("dax_device", "unbound")]
    m = p.metrics
    assert m.presented == 128 * MiB and m.gpa_wasted == 128 * MiB
    assert not m.shared_out_of_ram and not m.tag_discoverable
    assert all(o["tag"] is None for o in p.guest_objects())      # R1: no tag without the extension


# ---------------------------------------------------------------- unplug

def test_offline_failure_leaves_the_dimm_and_reports_ost():
    rig = Rig()
    p = vm(rig, soft_reserved=False, p_fail_normal=1.0)
    g = rig.group(256 * MiB)
    d = p.add(g)
    before_map = p.gas.map.to_arrays().starts.tolist()
    r = p.remove(g.tag)
    assert (r.returned, r.requested, r.complete) == (0, 256 * MiB, False)
    assert "offline failed" in r.reason and "EBUSY" in r.reason
    assert p.dimms() == [d] and p.gas.map.to_arrays().starts.tolist() == before_map
    assert all(s == "online" for s in p.blocks.state.values())   # rolled back
    assert p.metrics.control_ops == {"qmp": 3, "acpi_notify": 2, "acpi_ost": 1}
    assert len(rig.host.dax_devices) == 1
    p.blocks.p_fail["Normal"] = 0.0                              # the pinning goes away: retry works
    r = p.remove(g.tag)
    assert r.complete and r.how == "acpi-eject"
    assert p.metrics.control_ops == {"qmp": 5, "acpi_notify": 3, "acpi_ost": 1}
    assert p.gas.used == 0 and not p.blocks.state and not rig.host.dax_devices
    assert p.metrics.gpa_used == 0 and p.metrics.objects == {"dimm": 0, "dax_device": 0, "memory_block": 0}


def test_movable_zone_offlines_where_normal_fails():
    rig = Rig()
    p = vm(rig, soft_reserved=False, p_fail_normal=1.0, p_fail_movable=0.0, auto_online="online_movable")
    g = rig.group(256 * MiB)
    p.add(g)
    assert p.remove(g.tag).complete


def test_kmem_failed_remove_is_one_shot_until_reboot():
    rig = Rig()
    p = vm(rig, kmem=True, p_fail_normal=1.0)
    g = rig.group(256 * MiB)
    p.add(g)
    assert not p.remove(g.tag).complete
    p.blocks.p_fail["Normal"] = 0.0
    r = p.remove(g.tag)
    assert not r.complete and "until reboot" in r.reason
    out = p.kexec("keep")                                        # a reboot re-enumerates the DIMM
    assert out.feasible and out.kept == 256 * MiB
    assert p.remove(g.tag).complete


def test_devdax_removal_needs_no_offline():
    rig = Rig()
    p = vm(rig, p_fail_normal=1.0, p_fail_movable=1.0)
    g = rig.group(64 * MiB, 2 * MiB)
    p.add(g)
    assert p.remove(str(g.tag)).complete


# ---------------------------------------------------------------- migration, kexec, kdump

def test_migrate_drain_and_prepopulate():
    rig = Rig(shareable=True)
    p = vm(rig)
    g1, g2 = rig.group(64 * MiB), rig.group(128 * MiB)
    p.add(g1)
    p.add(g2)
    pre = p.migrate("prepopulate")
    assert pre.feasible and pre.copied == 0 and pre.control_ops == {"dest_qmp": 4}
    assert len(p.dimms()) == 2                                   # nothing changed here
    out = p.migrate("drain")
    assert out.feasible and out.returned == 192 * MiB and out.stuck == 0
    assert out.control_ops == {"qmp": 4, "acpi_notify": 2}
    assert p.dimms() == [] and p.gas.used == 0
    with pytest.raises(ConfigurationError):
        p.migrate("teleport")


def test_migrate_drain_blocked_by_a_dimm_the_guest_keeps():
    rig = Rig()
    p = vm(rig, soft_reserved=False, p_fail_normal=1.0)
    p.add(rig.group(128 * MiB))
    p.add(rig.group(2 * MiB))                                    # add_memory failed: ejects freely
    out = p.migrate("drain")
    assert not out.feasible and out.stuck == 128 * MiB and out.returned == 2 * MiB
    assert p.migrate("prepopulate").copied == 128 * MiB  # non-shareable contents are copied


def test_kexec_release_and_kdump():
    rig = Rig()
    p = vm(rig, soft_reserved=False)
    g = rig.group(256 * MiB)
    p.add(g)
    dump = p.kdump("keep")
    assert dump.feasible and dump.copied == 256 * MiB
    assert not p.kdump("release").feasible
    assert len(p.dimms()) == 1                                   # kdump changes nothing
    out = p.kexec("release")
    assert out.feasible and out.returned == 256 * MiB and p.dimms() == []
    for fn in (p.kexec, p.kdump):
        with pytest.raises(ConfigurationError):
            fn("bogus")


def test_kdump_keeps_devdax_out_of_the_dump():
    rig = Rig()
    p = vm(rig)
    p.add(rig.group(64 * MiB))
    d = p.kdump()
    assert d.copied == 0 and d.details["bytes_not_dumpable"] == 64 * MiB


# ---------------------------------------------------------------- property

CONFIGS = st.sampled_from([dict(), dict(kmem=True), dict(soft_reserved=False),
                           dict(soft_reserved=False, p_fail_normal=0.5), dict(enforce_aligned_dimm=False)])


@settings(max_examples=40)
@given(cfg=CONFIGS,
       groups=st.lists(st.lists(st.integers(1, 48), min_size=1, max_size=4), min_size=1, max_size=6),
       removes=st.lists(st.booleans(), min_size=6, max_size=6),
       seed=st.integers(0, 2**32 - 1))
def test_property_translation_overlap_and_removal(cfg, groups, removes, seed):
    rig = Rig()
    p = vm(rig, slots=16, maxmem=20 * GiB, seed=seed % 1000, **cfg)
    rng = np.random.default_rng(seed)
    for lens in groups:
        g = rig.group(*[n * 2 * MiB for n in lens])
        d = p.add(g)
        assert d["size"] == g.size
    media = rig.host.media_map()
    dimms = p.dimms()
    # translation: GPA -> HPA follows the view; HPA -> DPA follows the host
    tag_of = {x.id: x.tag for x in p._dimms.values()}            # the VMM side: memdev -> tag
    for d in dimms:
        g = rig.host.group(tag_of[d["id"]])
        offs = rng.integers(0, d["size"] // 64, size=32, dtype=np.uint64) * np.uint64(64)
        offs[0], offs[-1] = 0, d["size"] - 64
        hpa, dpa = p.translate_many(np.uint64(d["gpa"]) + offs)
        want_hpa = np.array([g.view.translate(int(o)) for o in offs], np.uint64)
        want_dpa = np.array([media.translate(int(h)) for h in want_hpa], np.uint64)
        assert (hpa == want_hpa).all() and (dpa == want_dpa).all()
    # no two objects of a kind overlap; blocks and dax devices lie inside their DIMM
    objs = p.guest_objects()
    for kind in ("dimm", "dax_device", "memory_block"):
        rs = sorted((o["gpa"], o["gpa"] + o["size"]) for o in objs if o["kind"] == kind)
        assert all(a[1] <= b[0] for a, b in zip(rs, rs[1:]))
    spans = [(d["gpa"], d["gpa"] + d["size"]) for d in dimms]
    for o in objs:
        assert any(lo <= o["gpa"] and o["gpa"] + o["size"] <= hi for lo, hi in spans)
        assert p.device_base <= o["gpa"] and o["gpa"] + o["size"] <= p.device_base + p.device_size
    assert p.gas.used == sum(d["size"] for d in dimms) <= p.metrics.gpa_used
    assert p.metrics.presented + p.metrics.gpa_wasted == p.metrics.gpa_used
    # removal: all or nothing; a successful one returns every byte and frees the GPA
    for d, rm in zip(list(dimms), removes):
        if not rm:
            continue
        tag = tag_of[d["id"]]
        used = p.gas.used
        r = p.remove(tag)
        if r.complete:
            assert r.returned == r.requested == rig.host.group(tag).size
            assert p.gas.used == used - d["size"]
            assert not p.gas.map.contains_many([d["gpa"]])[0]
        else:
            assert r.returned == 0 and r.reason and p.gas.used == used
    assert p.metrics.objects["dimm"] == len(p.dimms())
