"""The emulated CXL Type 3 presentation (dcdmap.present.type3): one scenario test per rule,
then a Hypothesis property test of random tagged adds and removes."""
from __future__ import annotations

import errno as E
import uuid

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from dcdmap.cxl import Device, Host, Region
from dcdmap.errors import ConfigurationError, HostError
from dcdmap.present.base import GUARANTEED, Lifecycle
from dcdmap.present.type3 import (
    CFMW_ALIGN, GuestExtent, HdmDecoder, Type3Presentation, x86_cfmw,
)

MiB, GiB = 1 << 20, 1 << 30


def make_host(length=4 * GiB, shareable=True, seed=1):
    dev = Device([Region(base=0, length=length, shareable=shareable)], seed=seed)
    return dev, Host(dev)


def offer(dev, host, tag, pieces):
    """Offer (DPA, length) pieces in the given order under ``tag`` and let the host accept."""
    dev.add_capacity(0, 0, pieces, tag=tag)
    host.poll()
    return host.group(tag)


def T(i):
    return uuid.UUID(int=i)


def host_dpa(host, tag, offsets):
    g = host.group(tag)
    return host.media_map().translate_many(g.view.translate_many(offsets))


# ---------------------------------------------------------------------- VMM side: CFMW, decoder

def test_cfmw_placed_after_host_register_region_rounded_to_256mib():
    # No device memory: host registers right after above-4G RAM, window at ROUND_UP(+1 MiB, 256 MiB).
    w, reg = x86_cfmw(1 * GiB, above_4g_mem_size=4 * GiB)
    assert reg == 8 * GiB and w.base == 8 * GiB + 256 * MiB
    # Device memory (DIMM/virtio-mem region) starts 1 GiB aligned; registers follow it.
    w, reg = x86_cfmw(1 * GiB, above_4g_mem_size=3 * GiB + 5 * MiB, device_memory_size=2 * GiB)
    assert reg == 8 * GiB + 2 * GiB and w.base == reg + 256 * MiB
    assert w.base % CFMW_ALIGN == 0


def test_cfmw_size_multiple_of_256mib_and_legal_granularity():
    for bad in (0, 100 * MiB, 256 * MiB + 2 * MiB):
        with pytest.raises(ConfigurationError):
            x86_cfmw(bad)
    with pytest.raises(ConfigurationError):
        x86_cfmw(256 * MiB, granularity=128)
    w, _ = x86_cfmw(512 * MiB, granularity=4096)
    assert w.encoded_granularity == 4 and w.ways == 1


def test_one_target_no_interleave_and_locked_decoder():
    dev, host = make_host()
    vm = Type3Presentation(host, above_4g_mem_size=2 * GiB)
    assert vm.cfmw.ways == 1 and vm.cfmw.granularity == 256 and vm.cfmw.targets == (0,)
    assert vm.decoder.committed and vm.decoder.locked and vm.decoder.ways == 1
    assert vm.decoder.to_dpa(vm.cfmw.base + 6 * MiB) == 6 * MiB             # GPA = window base + DPA
    with pytest.raises(HostError):
        vm.decoder.to_dpa(vm.cfmw.end)
    with pytest.raises(ConfigurationError):
        HdmDecoder(vm.cfmw.base, vm.cfmw.size, ways=2)
    with pytest.raises(ConfigurationError):
        HdmDecoder(vm.cfmw.base + 2 * MiB, vm.cfmw.size)
    with pytest.raises(ConfigurationError):
        HdmDecoder(vm.cfmw.base, vm.cfmw.size, granularity=100)          # IG encodings 256 B .. 16 KiB
    assert vm.topology["hb_passthrough"] and vm.topology["root_port"] and vm.topology["interleave_ways"] == 1


def test_emulated_device_one_head_region_sized_to_window():
    dev, host = make_host(length=3 * GiB + 2 * MiB)
    vm = Type3Presentation(host, block_size=4 * MiB)
    assert vm.cfmw.size == 3 * GiB + 256 * MiB                  # default: partition rounded up
    assert vm.dev.nheads == 1 and len(vm.dev.regions) == 1
    r = vm.dev.regions[0]
    assert (r.base, r.length, r.block_size, r.shareable) == (0, vm.cfmw.size, 4 * MiB, True)
    assert vm.guest.hpa_base == vm.cfmw.base and vm.guest.decoder == (0, vm.cfmw.size)
    assert vm.metrics.objects == {"cxl_device": 1, "cxl_region": 1, "dax_region": 1, "dax_device": 0, "extent": 0}
    assert vm.metrics.control_ops == {"mailbox": 2}              # boot: Get DC Config + Get Extent List
    for bad in (dict(block_size=1 * MiB), dict(block_size=3 * MiB), dict(block_size=512 * MiB),
                dict(slot_align=1 * MiB), dict(window_size=300 * MiB)):
        with pytest.raises(ConfigurationError):
            Type3Presentation(host, **bad)


# ---------------------------------------------------------------------- add: one extent per DAX region

def test_one_extent_per_dax_region_burns_gpa():
    dev, host = make_host()
    # A group of three scattered host extents, offered out of DPA order.
    g = offer(dev, host, T(1), [(512 * MiB, 4 * MiB), (0, 2 * MiB), (64 * MiB, 6 * MiB)])
    assert len(g.extents) == 3
    vm = Type3Presentation(host, slot_align=64 * MiB)
    x = vm.add(g)
    assert isinstance(x, GuestExtent)
    assert (x.gpa, x.dpa, x.length, x.slot, x.burned) == (vm.cfmw.base, 0, 12 * MiB, 64 * MiB, 52 * MiB)
    acc = vm.dev.accepted(0)
    assert len(acc) == 1 and int(acc["start"][0]) == 0 and int(acc["length"][0]) == 12 * MiB
    assert uuid.UUID(bytes=bytes(acc["tag"][0])) == T(1)
    # The GPA range maps piecewise through the host view, label = guest extent id.
    s, n, tgt, lab = vm.gas.map.to_arrays()
    assert len(s) == 3 and set(lab.tolist()) == {x.id}
    offs = np.arange(0, 12 * MiB, 1 * MiB, dtype=np.uint64)
    _, dpa = vm.translate_many(offs + np.uint64(x.gpa))
    assert np.array_equal(dpa, host_dpa(host, T(1), offs))
    m = vm.metrics
    assert (m.presented, m.gpa_used, m.gpa_wasted) == (12 * MiB, 64 * MiB, 52 * MiB)
    # The next group goes into the next aligned slot, first fit.
    y = vm.add(offer(dev, host, T(2), [(1 * GiB, 70 * MiB)]))
    assert y.gpa == vm.cfmw.base + 64 * MiB and y.slot == 128 * MiB and y.dpa == 64 * MiB
    assert vm.metrics.gpa_used == 192 * MiB and vm.metrics.gpa_wasted == 52 * MiB + 58 * MiB
    vm.check_invariants()
    # Removing the first frees its whole slot; a small group reuses it (first fit).
    vm.remove(T(1))
    z = vm.add(offer(dev, host, T(3), [(2 * GiB, 2 * MiB)]))
    assert z.gpa == vm.cfmw.base
    vm.check_invariants()


def test_guest_counts_and_objects_after_add():
    dev, host = make_host()
    vm = Type3Presentation(host)
    vm.add(offer(dev, host, T(1), [(0, 8 * MiB)]))
    assert vm.metrics.control_ops == {"mailbox": 3, "qmp": 1, "event": 1}   # + Add-Response, QMP add, 1 event
    assert vm.metrics.objects == {"cxl_device": 1, "cxl_region": 1, "dax_region": 1, "dax_device": 1, "extent": 1}
    kinds = [o["kind"] for o in vm.guest_objects()]
    assert kinds == ["cxl_device", "cxl_region", "dax_device"]


def test_tag_already_live_in_guest_is_refused_by_the_linux_rule():
    dev, host = make_host()
    g = offer(dev, host, T(1), [(0, 8 * MiB)])
    vm = Type3Presentation(host, slot_align=16 * MiB)
    vm.add(g)
    before = (vm.gas.used, vm.metrics.presented, vm.metrics.gpa_wasted, vm.dev.accepted(0).tolist())
    ops = dict(vm.metrics.control_ops)
    with pytest.raises(HostError) as ei:
        vm.add(g)                                       # the VMM forwards; the guest's §4.1 4a refuses
    assert ei.value.errno == E.EEXIST
    assert any(e["event"] == "group_refused" and "4a" in e["rule"] for e in vm.guest.log)
    assert before == (vm.gas.used, vm.metrics.presented, vm.metrics.gpa_wasted, vm.dev.accepted(0).tolist())
    assert vm.metrics.control_ops["qmp"] == ops["qmp"] + 1                  # the attempt was issued
    assert vm.metrics.control_ops["mailbox"] == ops["mailbox"] + 1          # the empty Add-Response
    assert vm.dev.pending_offers(0) == []
    vm.check_invariants()


def test_dax_device_found_by_tag():
    dev, host = make_host()
    vm = Type3Presentation(host)
    x = vm.add(offer(dev, host, T(7), [(32 * MiB, 4 * MiB), (0, 4 * MiB)]))
    (dax,) = vm.guest.dax_devices
    assert dax.uuid == T(7) and dax.size == 8 * MiB
    assert dax.translate(5 * MiB) == x.gpa + 5 * MiB               # guest view: contiguous GPA
    with pytest.raises(HostError) as ei:
        vm.guest.create_dax(T(7))                      # already claimed
    assert ei.value.errno == E.EBUSY
    assert vm.metrics.tag_discoverable


def test_add_refuses_groups_it_cannot_present():
    dev, host = make_host()
    g = offer(dev, host, T(1), [(0, 6 * MiB)])
    vm = Type3Presentation(host, block_size=4 * MiB)
    with pytest.raises(HostError) as ei:
        vm.add(g)                                       # 6 MiB is not a multiple of 4 MiB blocks
    assert ei.value.errno == E.EINVAL
    vm2 = Type3Presentation(host, shareable=False)
    with pytest.raises(HostError) as ei:
        vm2.add(g)                                      # a shareable group on a non-shareable region
    assert ei.value.errno == E.EINVAL
    dev.release_capacity(0, 0, policy="tag-based", tag=T(1))
    host.poll()
    with pytest.raises(HostError) as ei:
        Type3Presentation(host).add(g)                  # no longer live on the host
    assert ei.value.errno == E.ENOENT
    assert vm.metrics.gpa_used == 0 and vm.metrics.control_ops == {"mailbox": 2}


def test_non_shareable_host_groups():
    dev, host = make_host(shareable=False)
    vm = Type3Presentation(host)
    vm.add(offer(dev, host, T(1), [(8 * MiB, 2 * MiB), (0, 2 * MiB)]))
    assert not vm.dev.regions[0].shareable and not vm.guest.group(T(1)).shareable
    vm.check_invariants()


def test_window_exhaustion_enospc_leaves_state_unchanged():
    dev, host = make_host()
    vm = Type3Presentation(host, window_size=256 * MiB, slot_align=128 * MiB)
    vm.add(offer(dev, host, T(1), [(0, 100 * MiB)]))
    g2 = offer(dev, host, T(2), [(1 * GiB, 130 * MiB)])            # slot 256 MiB: does not fit
    snap = (vm.gas.used, dict(vm.metrics.control_ops), dict(vm.metrics.objects), vm.dev.accepted(0).tolist(),
            len(vm.dev.log), len(vm.guest.log))
    with pytest.raises(HostError) as ei:
        vm.add(g2)
    assert ei.value.errno == E.ENOSPC
    assert snap == (vm.gas.used, dict(vm.metrics.control_ops), dict(vm.metrics.objects),
                    vm.dev.accepted(0).tolist(), len(vm.dev.log), len(vm.guest.log))
    vm.add(offer(dev, host, T(3), [(2 * GiB, 128 * MiB)]))          # exactly the last slot
    assert vm.metrics.gpa_used == 256 * MiB
    vm.check_invariants()


# ---------------------------------------------------------------------- remove

def test_release_when_dax_device_not_in_use():
    dev, host = make_host()
    vm = Type3Presentation(host)
    x = vm.add(offer(dev, host, T(1), [(0, 4 * MiB), (16 * MiB, 4 * MiB)]))
    ops = dict(vm.metrics.control_ops)
    r = vm.remove(T(1))
    assert (r.how, r.returned, r.requested, r.complete) == ("release", x.length, x.length, True)
    assert vm.metrics.control_ops == {"mailbox": ops["mailbox"] + 1, "qmp": ops["qmp"] + 1,
                                      "event": ops["event"] + 1}              # one Release DC
    assert len(vm.dev.accepted(0)) == 0 and vm.metrics.gpa_used == 0 and vm.metrics.presented == 0
    assert vm.guest.dax_devices == [] and vm.metrics.objects["extent"] == 0
    assert host.group(T(1)).size == x.length               # the host keeps its group
    vm.check_invariants()
    with pytest.raises(HostError):
        vm.remove(T(1))


def test_release_deferred_while_guest_dax_device_in_use():
    dev, host = make_host()
    vm = Type3Presentation(host)
    x = vm.add(offer(dev, host, T(1), [(0, 4 * MiB)]))
    vm.set_in_use(T(1))
    r = vm.remove(T(1), force=False)
    assert (r.how, r.returned, r.complete) == ("deferred", 0, False)
    assert any(e["event"] == "release_deferred" for e in vm.guest.log)
    assert vm.metrics.presented == x.length and len(vm.dev.accepted(0)) == 1 and vm.guest.dax_devices
    vm.check_invariants()
    vm.set_in_use(T(1), False)                        # the application exits
    assert vm.remove(T(1), force=False).how == "release"
    vm.check_invariants()


def test_forced_release_as_last_resort_guest_loses_access():
    dev, host = make_host()
    vm = Type3Presentation(host, slot_align=8 * MiB)
    x = vm.add(offer(dev, host, T(1), [(0, 4 * MiB)]))
    vm.add(offer(dev, host, T(2), [(64 * MiB, 2 * MiB)]))
    vm.set_in_use(T(1))
    r = vm.remove(T(1))
    assert (r.how, r.returned, r.complete) == ("forced", x.length, True)
    events = [e["event"] for e in vm.guest.log]
    assert "release_deferred" in events and "forced_release_ignored" in events
    assert "group_lost" in events
    assert [uuid.UUID(bytes=bytes(t)) for t in vm.dev.accepted(0)["tag"]] == [T(2)]
    with pytest.raises(Exception):
        vm.translate(x.gpa)                          # the GPA no longer maps anywhere
    assert vm.metrics.gpa_used == 8 * MiB and vm.metrics.objects["dax_device"] == 1
    vm.check_invariants()


def test_in_use_needs_a_dax_device_and_remove_without_one_releases():
    dev, host = make_host()
    vm = Type3Presentation(host)
    x = vm.add(offer(dev, host, T(1), [(0, 4 * MiB)]))
    vm.kdump("keep")                                   # capture kernel: extents recovered, no DAX device
    snap = (len(vm.dev.log), len(vm.guest.log), dict(vm.metrics.control_ops))
    with pytest.raises(HostError) as ei:
        vm.set_in_use(T(1))                            # nothing to map
    assert ei.value.errno == E.ENODEV and not vm.in_use(T(1))
    assert snap == (len(vm.dev.log), len(vm.guest.log), dict(vm.metrics.control_ops))
    r = vm.remove(T(1), force=False)                   # no DAX device: the guest releases at once
    assert (r.how, r.returned) == ("release", x.length)
    assert len(vm.dev.accepted(0)) == 0 and vm.metrics.gpa_used == 0
    vm.check_invariants()


def test_bad_tag_string_is_a_clear_error():
    dev, host = make_host()
    vm = Type3Presentation(host)
    for call in (vm.remove, vm.in_use, vm.set_in_use):
        with pytest.raises(HostError) as ei:
            call("not-a-uuid")
        assert ei.value.errno == E.EINVAL


def test_emulated_device_extent_limit_refused_before_anything_is_issued():
    # QEMU refuses an Add-Response when count + tracked (accepted + pending) > the limit
    # (RESOURCES_EXHAUSTED) and the offer stays pending; the VMM refuses first, issuing nothing.
    dev, host = make_host(shareable=False)
    vm = Type3Presentation(host)
    vm.dev.max_extents = 4
    groups = [offer(dev, host, T(i), [(i * 2 * MiB, 2 * MiB)]) for i in range(1, 5)]
    for g in groups[:3]:
        vm.add(g)
    snap = (vm.gas.used, dict(vm.metrics.control_ops), len(vm.dev.log), len(vm.guest.log))
    with pytest.raises(HostError) as ei:
        vm.add(groups[3])
    assert ei.value.errno == E.ENOSPC
    assert snap == (vm.gas.used, dict(vm.metrics.control_ops), len(vm.dev.log), len(vm.guest.log))
    assert vm.dev.pending_offers(0) == []
    vm.check_invariants()
    vm.remove(T(1))
    assert vm.add(groups[3]).tag == T(4)
    vm.check_invariants()


def test_removal_metrics_r1_r3():
    dev, host = make_host()
    m = Type3Presentation(host).metrics
    assert m.removal == GUARANTEED and m.tag_discoverable and m.shared_out_of_ram
    assert any("forced" in r for r in m.removal_risks)


# ---------------------------------------------------------------------- migration, kexec, kdump

def two_groups(slot_align=16 * MiB):
    dev, host = make_host()
    vm = Type3Presentation(host, slot_align=slot_align)
    vm.add(offer(dev, host, T(1), [(0, 4 * MiB), (32 * MiB, 2 * MiB)]))
    vm.add(offer(dev, host, T(2), [(64 * MiB, 8 * MiB)]))
    return dev, host, vm


def test_migrate_prepopulate_changes_nothing():
    dev, host, vm = two_groups()
    before = (vm.metrics.presented, vm.metrics.gpa_used, dict(vm.metrics.control_ops))
    out = vm.migrate("prepopulate")
    assert isinstance(out, Lifecycle) and (out.event, out.policy, out.feasible) == ("migrate", "prepopulate", True)
    assert out.control_ops == {"qmp": 2, "event": 0, "mailbox": 0} and out.kept == 14 * MiB   # destination ops
    assert out.returned == 0 and out.details["extents"] == 2 and not out.details["guest_visible"]
    assert before == (vm.metrics.presented, vm.metrics.gpa_used, dict(vm.metrics.control_ops))
    with pytest.raises(ConfigurationError):
        vm.migrate("teleport")


def test_migrate_drain_removes_everything_forcing_in_use():
    dev, host, vm = two_groups()
    vm.set_in_use(T(2))
    out = vm.migrate("drain")
    assert isinstance(out, Lifecycle) and (out.event, out.policy, out.feasible) == ("migrate", "drain", True)
    assert out.returned == out.details["presented_before"] == 14 * MiB and out.details["forced"] == 1
    assert out.kept == 0 and out.details["gpa_used"] == 0
    assert out.stuck == 0 and out.copied == 0             # forced release guarantees the return
    vm.check_invariants()


def test_kexec_release_gives_all_back():
    dev, host, vm = two_groups()
    vm.set_in_use(T(1))                               # applications die with the old kernel
    out = vm.kexec()
    assert isinstance(out, Lifecycle) and out.event == "kexec" and out.feasible
    assert out.policy == "release" and out.returned == 14 * MiB and out.kept == 0 and out.stuck == 0
    assert out.control_ops["mailbox"] == 2 + 2        # one Release DC per guest extent + the new boot
    assert len(vm.dev.accepted(0)) == 0 and vm.metrics.gpa_used == 0
    vm.check_invariants()


def test_kexec_keep_recovers_by_rescan_and_reclaims_by_tag():
    dev, host, vm = two_groups()
    gpas = [x.gpa for x in vm.extents]
    out = vm.kexec("keep")
    assert out.policy == "keep" and out.kept == 14 * MiB and out.returned == 0
    assert {d.uuid for d in vm.guest.dax_devices} == {T(1), T(2)}
    assert any(e["event"] == "group_online" and e["recovered"] for e in vm.guest.log)
    assert "add_response" not in [e["event"] for e in vm.guest.log]      # recovered: not acknowledged
    assert [x.gpa for x in vm.extents] == gpas
    vm.check_invariants()
    assert vm.remove(T(1)).how == "release"
    vm.check_invariants()


def test_kdump_keep_and_release():
    dev, host, vm = two_groups()
    out = vm.kdump()
    assert isinstance(out, Lifecycle) and out.event == "kdump" and out.feasible
    assert out.policy == "keep" and out.kept == 14 * MiB and not out.details["dump_includes_dax"]
    assert out.copied == 0 and out.returned == 0
    assert vm.guest.dax_devices == [] and len(vm.guest.groups) == 2
    vm.check_invariants()
    out = vm.kdump("release")
    assert out.details["forced"] == 2 and out.returned == 14 * MiB and vm.metrics.gpa_used == 0
    assert out.kept == 0 and out.stuck == 0
    vm.check_invariants()
    with pytest.raises(ConfigurationError):
        vm.kdump("maybe")


# ---------------------------------------------------------------------- property test

@settings(max_examples=40, deadline=None)
@given(st.data())
def test_random_tagged_adds_and_removes(data):
    shareable = data.draw(st.booleans(), label="shareable")
    dev, host = make_host(length=1 * GiB, shareable=shareable, seed=data.draw(st.integers(0, 99)))
    slot_align = data.draw(st.sampled_from([2 * MiB, 8 * MiB, 64 * MiB, 128 * MiB]), label="slot_align")
    vm = Type3Presentation(host, window_size=256 * MiB, slot_align=slot_align)
    rnd = data.draw(st.randoms(use_true_random=False))
    nblocks = (1 * GiB) // (2 * MiB)
    added, returned, next_tag = {}, 0, 1
    for _ in range(data.draw(st.integers(1, 12), label="steps")):
        if added and data.draw(st.booleans()):
            tag = data.draw(st.sampled_from(sorted(added)))
            if data.draw(st.booleans()):
                vm.set_in_use(tag)
            r = vm.remove(tag)
            event(f"remove: {r.how}")
            assert r.complete and r.returned == added.pop(tag)
            returned += r.returned
        else:
            # A group of random size (2 MiB multiples) from free host blocks, in random order.
            held = np.zeros(nblocks, bool)
            for s, n in host.extents().tolist():
                held[s // (2 * MiB):(s + n) // (2 * MiB)] = True
            free = np.flatnonzero(~held)
            k = data.draw(st.integers(1, 12), label="blocks")
            if len(free) < k:
                continue
            pick = rnd.sample(sorted(free.tolist()), k)
            tag = T(next_tag)
            next_tag += 1
            group = offer(dev, host, tag, [(b * 2 * MiB, 2 * MiB) for b in pick])
            used = vm.gas.used
            try:
                x = vm.add(group)
            except HostError as e:
                assert e.errno == E.ENOSPC and vm.gas.used == used
                event("add: ENOSPC")
                vm.check_invariants()
                continue
            added[tag] = x.length
            assert x.length == 2 * MiB * k
        vm.check_invariants()
        # No GPA overlap between guest extents (slots, burn included).
        spans = sorted((x.gpa, x.gpa + x.slot) for x in vm.extents)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
        assert all(vm.cfmw.base <= s and e <= vm.cfmw.end for s, e in spans)
        # Random GPAs inside presented extents land on the DPA the host's view gives.
        for x in vm.extents:
            offs = np.array(sorted(rnd.randrange(0, x.length, 64) for _ in range(16)), np.uint64)
            hpa, dpa = vm.translate_many(offs + np.uint64(x.gpa))
            view = host.group(x.tag).view
            assert np.array_equal(hpa, view.translate_many(offs))
            assert np.array_equal(dpa, host.media_map().translate_many(view.translate_many(offs)))
            assert vm.guest.group(x.tag).dax.translate(int(offs[0])) == x.gpa + int(offs[0])
        assert vm.metrics.presented == sum(added.values())
    total = sum(added.values()) + returned
    for tag in list(added):
        returned += vm.remove(tag).returned
    assert returned == total
    assert vm.metrics.gpa_used == 0 and vm.metrics.presented == 0 and len(vm.dev.accepted(0)) == 0
    assert vm.dev.capacity().free == vm.cfmw.size
    vm.check_invariants()
