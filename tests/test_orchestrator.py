"""The orchestrator (dcdmap/orchestrator.py; its module docstring is the spec).

Generated presets check conservation and cleanliness end to end; hand-made workloads hit
each rule of the spec deterministically (placement, merge, linger, forced releases,
migration, kexec, sharing, untagged capacity, the run trace); a Hypothesis property runs
small random workloads under random configurations.
"""
import io
import json
import math
import uuid

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcdmap.errors import ConfigurationError, CorruptDataError
from dcdmap.orchestrator import (PLACEMENTS, PRESENTATIONS, Config, GuestTotals, Orchestrator, Report,
                                 read_run, replay)
from dcdmap.present import Type3Presentation
from dcdmap.present.base import Removal
from dcdmap.units import GiB, MiB
from dcdmap.workload import (NAMESPACE, NULL_TAG, Allocate, Host, Kexec, Migrate, Release, VmStart,
                             VmStop, Workload, generate)


# ---------------------------------------------------------------------- helpers

def tag(k):
    return uuid.UUID(int=k)


def app(tick, alloc, host, size, extents=None, vm=None):
    """A single-host tagged allocation (tag ``alloc + 1``)."""
    return Allocate(tick, alloc, "app", (host,), size, tag(alloc + 1),
                    [size] if extents is None else extents, 0, vm)


def hand(events, hosts=2, pool=1 * GiB, seed=1):
    """A hand-made workload (events given in order; Host events are optional)."""
    return Workload("hand", seed, {"hosts": hosts, "pool_size": pool}, tuple(events))


def run(w, config=None, **kw):
    o = Orchestrator(w, config, **kw)
    r = o.run()
    for d in o.devices:
        d.check_invariants()
    return o, r


def acts(o, do, **match):
    """The actions of one kind whose fields match."""
    return [a for a in o.actions if a["do"] == do and all(a.get(k) == v for k, v in match.items())]


def reasons(r):
    return [why for _, _, why in r.refusals]


def assert_clean(o, r):
    """Everything went back: the devices are all free, the hosts hold nothing but what they
    kept after forced releases (Linux ignores them), the orchestrator's ledgers hold only
    that quarantined DPA and nothing is live."""
    f = r.final
    assert (f.free, f.pending, f.accepted) == (f.total, 0, 0)
    assert r.bytes_released == r.bytes_accepted
    stale = {(live.appliance, h, live.tag) for live in o._stale.values() for h in live.stale}
    for a, row in enumerate(o.hosts):
        for h in row:
            assert h.dax_devices == []
            assert {(a, h.head, g.tag) for g in h.groups} <= stale
            assert len(h.groups) == sum(1 for s in stale if s[:2] == (a, h.head))
    for d in o.devices:
        for head in range(o.nhosts):
            assert d.head_capacity(head)[1] == 0
    # white-box: the placement ledgers (a leak there refuses later allocations)
    assert sum(led.mapped_bytes for led in o._ledgers) == r.bytes_stranded
    assert o._live == {}


def group_starts(host, t):
    return host.group(t).extents["start"].tolist()


# ---------------------------------------------------------------------- generated presets

# "busy": the default preset with more kexecs and migrations, so that every presentation
# meets drain, prepopulate, kexec release and preserve; the default and famfs-shared presets
# as they are (shorter).
VARIANTS = {"busy": ("default", dict(duration=150_000, kexec_interarrival=30_000.0, migrate_prob=0.5)),
            "default": ("default", dict(duration=200_000)),
            "famfs-shared": ("famfs-shared", dict(duration=120_000))}
PRESET_RUNS = [("busy", p, s) for p in (None,) + PRESENTATIONS for s in range(3)] + \
              [(v, None, s) for v in ("default", "famfs-shared") for s in range(3)]


def preset_workload(variant, seed):
    preset, knobs = VARIANTS[variant]
    return generate(preset, seed=seed, **knobs)


@pytest.mark.parametrize("variant,presentation,seed", PRESET_RUNS)
def test_generated_presets_conserve_and_end_clean(variant, presentation, seed):
    w = preset_workload(variant, seed)
    o, r = run(w, presentation=presentation)
    assert_clean(o, r)
    allocs = w.allocations()
    assert r.counts == {k: n for k, n in w.summary()["events"].items() if n}
    assert r.bytes_allocated == sum(a.size * len(a.hosts) for a in allocs)
    assert r.bytes_offered == r.bytes_accepted                 # every offer taken in full
    assert r.bytes_accepted >= r.bytes_allocated
    assert r.shared_consistent and r.shared_verified >= sum(a.kind == "shared" for a in allocs)
    assert r.retagged == sum(a.kind == "untagged" for a in allocs)
    # The only thing that may go wrong: a hotplug-kmem guest that cannot offline its
    # memory blocks (best-effort removal) blocks a drain migration.
    assert len(r.refusals) == r.migrations.get("blocked", 0)
    assert all("migration blocked" in why for why in reasons(r))
    if r.refusals:
        assert presentation == "hotplug-kmem"
    assert sum(r.migrations.values()) == r.counts.get("migrate", 0)
    assert sum(r.kexecs.values()) == r.counts.get("kexec", 0)
    assert (r.guest is None) == (presentation is None)
    if presentation is not None:
        assert r.guest.vms > 0 and r.guest.presented > 0
    if presentation == "type3":                    # guaranteed: every drain got it all back
        assert r.guest.takeback_requested == r.guest.takeback_returned
    # determinism: the same workload and configuration, the same report and actions
    o2, r2 = run(preset_workload(variant, seed), presentation=presentation)
    assert r2 == r and o2.actions == o.actions


def test_generated_presets_cover_migration_and_kexec():
    """The preset runs above do reach the migration and kexec paths."""
    total = {}
    for seed in range(3):
        r = run(preset_workload("busy", seed))[1]
        for k, v in [*r.migrations.items(), *r.kexecs.items()]:
            total[k] = total.get(k, 0) + v
    assert all(total.get(k, 0) > 0 for k in ("drain", "prepopulate", "release", "preserve")), total


# ---------------------------------------------------------------------- placement and merge

def test_first_fit_lowest_address_and_spread_largest_gap():
    # A0 [0, 6M), A1 [6M, 10M); A0 goes; A2 (2 MiB): first-fit takes the lowest gap (0),
    # spread the largest one (from 10M).
    events = [app(0, 0, 0, 6 * MiB, [2 * MiB, 4 * MiB]), app(0, 1, 0, 4 * MiB),
              Release(10, 0), app(20, 2, 0, 2 * MiB)]
    o, r = run(hand(events))
    host = o.hosts[0][0]
    assert group_starts(host, tag(2)) == [6 * MiB] and group_starts(host, tag(3)) == [0]
    assert [a["extents"] for a in acts(o, "offer")] == [1, 1, 1]          # 2+4 MiB merged
    assert r.refusals == []
    o, r = run(hand(events), placement="spread")
    host = o.hosts[0][0]
    assert group_starts(host, tag(2)) == [6 * MiB] and group_starts(host, tag(3)) == [10 * MiB]


def test_first_allocation_at_dpa_zero():
    o, r = run(hand([app(0, 0, 1, 8 * MiB, [2 * MiB] * 4)]))
    assert group_starts(o.hosts[0][1], tag(1)) == [0]
    assert o.hosts[0][1].group(tag(1)).size == 8 * MiB
    assert o.devices[0].capacity(0).accepted == 8 * MiB


def test_spread_alternates_and_balances_appliances():
    # 1 GiB over 2 appliances: 512 MiB regions each.
    events = [app(0, i, i % 2, 100 * MiB) for i in range(4)] + [app(0, 4, 0, 50 * MiB)]
    o, r = run(hand(events), placement="spread", appliances=2)
    assert [d.capacity(0).total for d in o.devices] == [512 * MiB] * 2
    assert [a["appliance"] for a in acts(o, "offer")] == [0, 1, 0, 1, 0]
    assert [d.capacity(0).accepted for d in o.devices] == [250 * MiB, 200 * MiB]
    # every allocation is held by its host on the appliance it was placed on
    for a in acts(o, "offer"):
        assert o.hosts[a["appliance"]][a["host"]].group(tag(a["alloc"] + 1)).size == a["bytes"]
    o, r = run(hand(events), placement="first-fit", appliances=2)
    assert [a["appliance"] for a in acts(o, "offer")] == [0] * 5
    assert [d.capacity(0).accepted for d in o.devices] == [450 * MiB, 0]
    assert r.final.total == 1 * GiB and r.final.free == 1 * GiB - 450 * MiB


def test_first_fit_overflows_to_the_next_appliance():
    events = [app(0, 0, 0, 400 * MiB), app(0, 1, 0, 200 * MiB)]
    o, r = run(hand(events), appliances=2)
    assert [a["appliance"] for a in acts(o, "offer")] == [0, 1]
    assert r.refusals == []


def test_device_placement_lets_the_device_choose():
    events = [app(0, 0, 0, 64 * MiB, [2 * MiB] * 32), app(0, 1, 1, 32 * MiB), Release(5, 0),
              app(10, 2, 0, 128 * MiB, [32 * MiB] * 4)]
    o, r = run(hand(events, pool=256 * MiB), placement="device")
    assert r.refusals == []
    dev = o.devices[0]
    for h, t in ((1, tag(2)), (0, tag(3))):
        held = np.sort(o.hosts[0][h].extents()[:, 0])
        assert held.tolist() == np.sort(dev.accepted(h)["start"]).tolist()
        assert o.hosts[0][h].group(t).size == dev.head_capacity(h)[1]
    # the ledger is the device's choice
    assert o._ledgers[0].mapped_bytes == dev.capacity(0).accepted == 160 * MiB
    # the device chose (selection policy free): here the gap after allocation 1, in one
    # extent, where first-fit puts the 4 x 32 MiB at the lowest addresses (two extents)
    adds = [e for e in dev.log if e["op"] == "add_capacity"]
    assert [e["policy"] for e in adds] == ["FREE"] * 3
    assert [x[:2] for x in adds[2]["extents"]] == [[96 * MiB, 128 * MiB]]
    assert acts(o, "offer", alloc=2)[0]["extents"] == 1
    o, r = run(hand(events, pool=256 * MiB))
    adds = [e for e in o.devices[0].log if e["op"] == "add_capacity"]
    assert [e["policy"] for e in adds] == ["PRESCRIPTIVE"] * 3
    assert [x[:2] for x in adds[2]["extents"]] == [[0, 64 * MiB], [96 * MiB, 64 * MiB]]


def test_merge_joins_adjacent_extents_into_one_offer():
    sizes = [2 * MiB] * 5 + [4 * MiB] * 3
    o, r = run(hand([app(0, 0, 0, 22 * MiB, sizes)]))
    assert acts(o, "offer")[0]["extents"] == 1 and r.extents_offered == 1
    assert len(o.hosts[0][0].group(tag(1)).extents) == 1
    o, r = run(hand([app(0, 0, 0, 22 * MiB, sizes)]), merge=False)
    assert acts(o, "offer")[0]["extents"] == 8 and r.extents_offered == 8
    assert len(o.hosts[0][0].group(tag(1)).extents) == 8
    assert r.peak_extents == 8


def test_more_than_100_extents_refused_by_linux_unless_merged():
    size = 150 * 2 * MiB
    events = [app(0, 0, 0, size, [2 * MiB] * 150), Release(10, 0)]
    o, r = run(hand(events), merge=False)
    assert acts(o, "offer")[0]["extents"] == 150
    assert reasons(r) == [f"host 0 accepted 0 of {size} bytes"]
    assert r.bytes_offered == size and r.bytes_accepted == 0 and r.bytes_released == 0
    assert any(e["event"] == "chain_overflow" for e in o.hosts[0][0].log)
    assert_clean(o, r)
    o, r = run(hand(events))
    assert acts(o, "offer")[0]["extents"] == 1
    assert r.refusals == [] and r.bytes_accepted == r.bytes_released == size
    assert_clean(o, r)


def test_fragmented_ledger_cuts_an_extent_over_the_gaps():
    # 4 x 64 MiB, free the 1st and 3rd: a 128 MiB extent fits no single gap: cut over both.
    events = [app(0, i, 0, 64 * MiB) for i in range(4)] + [Release(5, 0), Release(5, 2),
                                                          app(10, 4, 1, 128 * MiB)]
    o, r = run(hand(events, pool=256 * MiB))
    assert r.refusals == []
    assert sorted(group_starts(o.hosts[0][1], tag(5))) == [0, 128 * MiB]
    assert acts(o, "offer", alloc=4)[0]["extents"] == 2


def test_no_room_is_refused_and_nothing_leaks():
    events = [app(0, 0, 0, 200 * MiB), app(0, 1, 1, 100 * MiB), Release(10, 0), Release(10, 1)]
    o, r = run(hand(events, pool=256 * MiB))
    assert reasons(r) == [f"no appliance has {100 * MiB:#x} free bytes"]
    assert acts(o, "offer", alloc=1) == []
    r_release = acts(o, "release")
    assert [(a["alloc"], a["bytes"]) for a in r_release] == [(0, 200 * MiB)]
    assert_clean(o, r)


# ---------------------------------------------------------------------- linger and forced

def test_lingering_application_defers_then_releases():
    size = 64 * MiB
    o, r = run(hand([app(0, 0, 0, size), Release(100, 0)]), linger=1.0, linger_ticks=1,
               retry=1_000)
    assert (r.deferred, r.retries, r.forced, r.bytes_lost) == (1, 1, 0, 0)
    assert [(a["tick"], a["bytes"]) for a in acts(o, "release")] == [(100, 0), (1_100, size)]
    assert [(a["tick"], a["attempt"]) for a in acts(o, "deferred")] == [(100, 0)]
    log = [e["event"] for e in o.hosts[0][0].log]
    assert "release_deferred" in log and "group_released" in log
    assert r.refusals == []
    assert_clean(o, r)


def test_lingering_shared_allocation_defers_on_every_holder():
    size = 32 * MiB
    w = hand([Allocate(0, 0, "shared", (0, 1, 2), size, tag(1), [size]), Release(100, 0)], hosts=3)
    o, r = run(w, linger=1.0, linger_ticks=1, retry=1_000)
    assert (r.deferred, r.retries, r.forced) == (3, 1, 0)
    assert r.bytes_released == r.bytes_accepted == 3 * size
    assert_clean(o, r)


def test_lingering_too_long_is_forced_and_lost():
    size = 64 * MiB
    o, r = run(hand([app(0, 0, 0, size), Release(100, 0)]), linger=1.0, linger_ticks=10**9,
               retry=1_000, max_retries=2)
    assert (r.deferred, r.retries, r.forced, r.bytes_lost) == (1, 2, 1, size)
    assert [a["attempt"] for a in acts(o, "deferred")] == [0, 1, 2]
    force = acts(o, "force")
    assert len(force) == 1 and force[0]["tick"] == 2_100 and "after 2 re-issued" in force[0]["why"]
    assert acts(o, "release", forced=True)[0]["bytes"] == size
    host = o.hosts[0][0]
    assert host.group(tag(1)).size == size            # Linux ignored the forced release
    assert (r.bytes_stale, r.bytes_stranded) == (size, size)
    assert acts(o, "stale") == [{"do": "stale", "tick": 2_100, "alloc": 0, "hosts": [0], "bytes": size}]
    assert_clean(o, r)


def test_max_retries_zero_forces_at_once():
    o, r = run(hand([app(0, 0, 0, 64 * MiB), Release(100, 0)]), linger=1.0, linger_ticks=10**9,
               max_retries=0)
    assert (r.deferred, r.retries, r.forced, r.bytes_lost) == (1, 0, 1, 64 * MiB)
    assert acts(o, "force")[0]["tick"] == 100
    assert_clean(o, r)


def test_workload_forced_release_is_quarantined_until_the_host_restarts():
    # The whole pool, forced back at tick 20: the device has it free at once, but host 0's
    # Linux ignored the forced release and still maps it, so the orchestrator keeps the DPA
    # out of use (offered to host 0 again, Linux would refuse it) until host 0 kexecs.
    events = [app(0, 0, 0, 256 * MiB), Release(20, 0, forced=True), app(20, 1, 1, 256 * MiB),
              Release(25, 1), Kexec(30, 0, "preserve"), app(40, 2, 1, 256 * MiB), Release(50, 2)]
    o, r = run(hand(events, pool=256 * MiB))
    assert reasons(r) == [f"no appliance has {256 * MiB:#x} free bytes"]      # alloc 1, at tick 20
    assert (r.forced, r.deferred, r.bytes_lost, r.bytes_stale, r.bytes_stranded) == (1, 0, 0, 256 * MiB, 0)
    assert acts(o, "release", alloc=0)[0] == {"do": "release", "tick": 20, "alloc": 0, "host": 0,
                                              "bytes": 256 * MiB, "forced": True}
    assert acts(o, "unstale") == [{"do": "unstale", "tick": 30, "alloc": 0}]
    assert [a["alloc"] for a in acts(o, "accept")] == [0, 2]
    assert any(e["event"] == "forced_release_ignored" for e in o._old_hosts[0].log)
    assert o.hosts[0][0].groups == []                  # the new kernel found nothing of it
    assert_clean(o, r)


def test_forced_release_of_a_shared_allocation():
    size = 16 * MiB
    events = [Host(0, h, 64 * GiB, 0) for h in range(3)] + [
        Allocate(10, 0, "shared", (0, 1, 2), size, tag(1), [8 * MiB, 8 * MiB]),
        Release(20, 0, forced=True)]
    o, r = run(hand(events, hosts=3))
    assert r.refusals == [] and r.forced == 1 and r.bytes_released == 3 * size
    assert r.counts == {"allocate": 1, "host": 3, "release": 1}
    assert (r.bytes_stale, r.bytes_stranded) == (3 * size, size)
    for h in range(3):
        assert o.hosts[0][h].group(tag(1)).size == size
    assert_clean(o, r)


# ---------------------------------------------------------------------- VMs and migration

def vm_workload(policy, *, stop=None, pool=2 * GiB, size=1 * GiB):
    """VM 0 (4 GiB) on host 0 with ``size`` of pool (allocation 0), migrated to host 1 at
    tick 100; stopped and released at ``stop``."""
    ev = [VmStart(0, 0, 0, 4 * GiB, 0), app(0, 0, 0, size, vm=0), Migrate(100, 0, 1, policy)]
    if stop is not None:
        ev += [VmStop(stop, 0), Release(stop, 0)]
    return hand(ev, pool=pool)


@pytest.mark.parametrize("presentation", [None, "type3", "virtio-mem", "hotplug"])
def test_drain_migration_moves_the_vm(presentation):
    o, r = run(vm_workload("drain"), presentation=presentation)
    assert r.refusals == [] and r.migrations == {"drain": 1}
    assert r.bytes_reoffered == 1 * GiB and r.bytes_offered == r.bytes_accepted == 2 * GiB
    assert o.hosts[0][0].groups == []
    assert o.hosts[0][1].group(tag(1)).size == 1 * GiB
    assert o.devices[0].head_capacity(0)[1] == 0 and o.devices[0].head_capacity(1)[1] == 1 * GiB
    assert [a["host"] for a in acts(o, "offer")] == [0, 1]
    if presentation == "type3":                       # guaranteed take-back
        g = r.guest
        assert g.takeback_requested == g.takeback_returned == 1 * GiB
        assert acts(o, "take_back")[0]["returned"] == 1 * GiB
        assert len(acts(o, "present")) == 2
        assert o._vms[0].pres.host is o.hosts[0][1]
    if presentation is None:
        # the VM's capacity is an application: its DAX device is on the destination
        assert [d.uuid for d in o.hosts[0][1].dax_devices] == [tag(1)]


def test_drain_migration_then_stop_is_clean():
    o, r = run(vm_workload("drain", stop=1_000), presentation="type3")
    assert r.refusals == [] and r.migrations == {"drain": 1}
    assert r.bytes_released == r.bytes_accepted == 2 * GiB
    assert_clean(o, r)


def test_prepopulate_offers_on_the_destination_first():
    o, r = run(vm_workload("prepopulate"), presentation="type3")
    assert r.refusals == [] and r.migrations == {"prepopulate": 1}
    assert r.guest.takeback_requested == 0                # no guest cooperation
    assert r.bytes_reoffered == 1 * GiB
    after = [a for a in o.actions if a["tick"] == 100]
    assert [a["do"] for a in after] == ["offer", "accept", "present", "release", "migrated"]
    assert after[0]["host"] == 1 and after[3]["host"] == 0 and after[3]["bytes"] == 1 * GiB
    assert after[-1] == {"do": "migrated", "tick": 100, "vm": 0, "to": 1, "policy": "prepopulate",
                         "source": 0}
    assert o.hosts[0][0].groups == [] and o.hosts[0][1].group(tag(1)).size == 1 * GiB
    o, r = run(vm_workload("prepopulate", stop=1_000), presentation="type3")
    assert r.refusals == []
    assert_clean(o, r)


def test_prepopulate_without_room_falls_back_to_drain():
    o, r = run(vm_workload("prepopulate", pool=1 * GiB, size=768 * MiB), presentation="type3")
    assert r.refusals == [] and r.migrations == {"drain": 1}
    assert len(acts(o, "fallback", vm=0)) == 1
    assert r.guest.takeback_requested == r.guest.takeback_returned == 768 * MiB
    assert o.hosts[0][1].group(tag(1)).size == 768 * MiB


@pytest.fixture
def stuck_guest(monkeypatch):
    """A type3 guest that never gives capacity back."""
    def remove(self, t, **kw):
        size = self.host.group(t).size
        return Removal(t, 0, size, "stuck", "pinned pages")
    monkeypatch.setattr(Type3Presentation, "remove", remove)


def test_drain_blocked_after_max_retries(stuck_guest):
    o, r = run(vm_workload("drain", stop=20_000), presentation="type3", retry=1_000, max_retries=3)
    assert r.migrations == {"blocked": 1}                  # and not also "cancelled" at the stop
    assert r.retries == 3
    assert reasons(r) == [f"the guest kept {1 * GiB:#x} bytes after 3 retries: migration blocked"]
    assert [a["tick"] for a in acts(o, "take_back")] == [100, 1_100, 2_100, 3_100]
    assert r.guest.takeback_returned == 0 and r.guest.takeback_requested == 1 * GiB   # asked once
    assert acts(o, "migrated") == [] and acts(o, "cancelled") == []
    # the VM stayed on its host until it stopped; then everything went back
    assert [a["host"] for a in acts(o, "release")] == [0]
    assert_clean(o, r)


def test_drain_blocked_vm_stays_on_its_host(stuck_guest):
    o, r = run(vm_workload("drain"), presentation="type3", retry=1_000, max_retries=1)
    assert r.migrations == {"blocked": 1}
    assert o.hosts[0][0].group(tag(1)).size == 1 * GiB and o.hosts[0][1].groups == []
    assert o._vms[0].host == 0


def test_drain_cancelled_when_the_vm_stops(stuck_guest):
    o, r = run(vm_workload("drain", stop=1_500), presentation="type3", retry=1_000, max_retries=3)
    assert r.migrations == {"cancelled": 1}
    assert r.retries == 1 and len(acts(o, "take_back")) == 2
    assert acts(o, "cancelled") == [{"do": "cancelled", "tick": 1_500, "vm": 0}]
    assert r.refusals == []
    assert_clean(o, r)


def test_migrate_an_unknown_vm_is_refused():
    o, r = run(hand([Migrate(5, 7, 1, "drain")]))
    assert reasons(r) == ["no such VM"] and r.migrations == {}


# ---------------------------------------------------------------------- kexec

def test_kexec_release_reoffers_to_the_new_kernel():
    size = 64 * MiB
    w = hand([app(0, 0, 0, size, [2 * MiB] * 32), app(0, 1, 1, size), Kexec(100, 0, "release")])
    o = Orchestrator(w)
    old0, old1 = o.hosts[0][0], o.hosts[0][1]
    r = o.run()
    assert r.refusals == [] and r.kexecs == {"release": 1}
    assert r.bytes_reoffered == size and r.bytes_released == size
    assert r.bytes_offered == r.bytes_accepted == 3 * size
    new = o.hosts[0][0]
    assert new is not old0 and o.hosts[0][1] is old1
    assert new.group(tag(1)).size == size and [d.uuid for d in new.dax_devices] == [tag(1)]
    assert old0.groups == []                            # the old kernel gave it all back
    assert acts(o, "kexec") == [{"do": "kexec", "tick": 100, "host": 0, "policy": "release",
                                 "allocations": 1}]


def test_kexec_preserve_recovers_by_rescan():
    size = 96 * MiB
    w = hand([app(0, 0, 0, size, [32 * MiB] * 3), Kexec(100, 0, "preserve")])
    o = Orchestrator(w, merge=False)
    old = o.hosts[0][0]
    r = o.run()
    assert r.refusals == [] and r.kexecs == {"preserve": 1}
    assert r.bytes_recovered == size and r.bytes_reoffered == 0 and r.bytes_released == 0
    assert r.bytes_offered == r.bytes_accepted == size      # nothing offered again
    new = o.hosts[0][0]
    assert new is not old and new.group(tag(1)).size == size
    assert len(new.group(tag(1)).extents) == 3
    assert [d.uuid for d in new.dax_devices] == [tag(1)]
    assert any(e["event"] == "group_online" and e["recovered"] for e in new.log)
    assert o.devices[0].head_capacity(0)[1] == size


@pytest.mark.parametrize("policy", ["release", "preserve"])
def test_kexec_with_a_vm(policy):
    w = hand([VmStart(0, 0, 0, 4 * GiB, 0), app(0, 0, 0, 1 * GiB, vm=0), Kexec(100, 0, policy),
              VmStop(1_000, 0), Release(1_000, 0)])
    o, r = run(w, presentation="type3")
    assert r.refusals == [] and r.kexecs == {policy: 1}
    assert len(acts(o, "present")) == 2                     # presented again on the new kernel
    assert r.bytes_recovered == (1 * GiB if policy == "preserve" else 0)
    assert r.bytes_reoffered == (1 * GiB if policy == "release" else 0)
    assert_clean(o, r)


@pytest.mark.parametrize("policy", ["release", "preserve"])
def test_kexec_while_a_release_is_deferred(policy):
    # The workload released the allocation at tick 10; the host defers (the application
    # lingers).  The kexec at 500 ends the application: the allocation must not be offered
    # again (it would never be released) nor restarted (it would be forced, bytes lost).
    w = hand([app(0, 0, 0, 64 * MiB), Release(10, 0), Kexec(500, 0, policy)])
    o, r = run(w, linger=1.0, linger_ticks=10**9, retry=1_000, max_retries=3)
    assert r.refusals == []
    assert (r.bytes_reoffered, r.forced, r.bytes_lost) == (0, 0, 0)
    assert r.bytes_offered == r.bytes_accepted == r.bytes_released == 64 * MiB
    assert acts(o, "offer", alloc=0)[0]["tick"] == 0 and len(acts(o, "offer")) == 1
    # released by the kexec (release), or by the next re-issued release (preserve)
    done = [a["tick"] for a in acts(o, "release") if a["bytes"]]
    assert done == ([500] if policy == "release" else [1_010])
    assert r.bytes_recovered == (64 * MiB if policy == "preserve" else 0)
    assert o.hosts[0][0].dax_devices == []
    assert_clean(o, r)


@pytest.mark.parametrize("seed", range(6))
def test_kexec_release_with_device_placement(seed):
    # The device picks the re-offered DPA from what the kexec'ed host gave back, which may be
    # the DPA of another of its allocations: the ledger must already know it is free.
    events = [app(0, 0, 0, 64 * MiB), app(0, 1, 1, 64 * MiB), app(0, 2, 0, 64 * MiB),
              Kexec(100, 0, "release")] + [Release(200, i) for i in range(3)]
    o, r = run(hand(events, pool=256 * MiB, seed=seed), placement="device")
    assert r.refusals == [] and r.bytes_reoffered == 128 * MiB
    assert_clean(o, r)


# ---------------------------------------------------------------------- sharing

def test_shared_allocation_to_three_hosts_is_verified():
    size = 24 * MiB
    w = hand([Allocate(0, 0, "shared", (0, 1, 2), size, tag(9), [8 * MiB] * 3)], hosts=3)
    o, r = run(w)
    assert r.refusals == [] and r.shared_verified == 1 and r.shared_consistent
    assert r.bytes_allocated == r.bytes_offered == r.bytes_accepted == 3 * size
    assert [a["host"] for a in acts(o, "share")] == [1, 2]
    assert acts(o, "verify") == [{"do": "verify", "tick": 0, "alloc": 0, "hosts": [0, 1, 2],
                                  "consistent": True}]
    for h in range(3):
        assert o.hosts[0][h].group(tag(9)).size == size
        assert [d.uuid for d in o.hosts[0][h].dax_devices] == [tag(9)]
    assert o.devices[0].capacity(0).accepted == size          # one copy of the DPA


def test_kexec_of_a_shared_holder_reshares():
    size = 24 * MiB
    w = hand([Allocate(0, 0, "shared", (0, 1, 2), size, tag(9), [8 * MiB] * 3),
              Kexec(50, 1, "release")], hosts=3)
    o = Orchestrator(w)
    old = o.hosts[0][1]
    r = o.run()
    assert r.refusals == [] and r.kexecs == {"release": 1}
    new = o.hosts[0][1]
    assert new is not old and old.groups == []
    assert new.group(tag(9)).size == size and [d.uuid for d in new.dax_devices] == [tag(9)]
    assert r.bytes_accepted == 4 * size and r.bytes_released == size
    o, r = run(hand(w.events + (Release(100, 0),), hosts=3))
    assert r.shared_verified == 2 and r.shared_consistent
    assert [(a["tick"], a["host"]) for a in acts(o, "share")] == [(0, 1), (0, 2), (50, 1)]
    assert acts(o, "verify")[-1]["hosts"] == [0, 2, 1]
    assert r.bytes_reoffered == size
    assert r.bytes_accepted == r.bytes_released == 4 * size
    assert_clean(o, r)


def test_kexec_preserve_of_a_shared_holder():
    size = 24 * MiB
    w = hand([Allocate(0, 0, "shared", (0, 1), size, tag(9), [8 * MiB] * 3),
              Kexec(50, 1, "preserve"), Release(100, 0)], hosts=2)
    o, r = run(w)
    assert r.refusals == [] and r.bytes_recovered == size
    assert_clean(o, r)


# ---------------------------------------------------------------------- untagged

def test_untagged_retagged_by_default():
    size = 4 * MiB
    w = hand([Allocate(0, 0, "untagged", (1,), size, NULL_TAG, [size])], seed=42)
    o, r = run(w)
    t = uuid.uuid5(NAMESPACE, "untagged/42/0")
    assert r.refusals == [] and r.retagged == 1
    assert o.hosts[0][1].group(t).size == size
    assert o.hosts[0][1].dax_devices == []                 # nobody claims untagged capacity


def test_untagged_null_is_refused_by_linux():
    size = 4 * MiB
    w = hand([Allocate(0, 0, "untagged", (0,), size, NULL_TAG, [size]), Release(5, 0)])
    o, r = run(w, untagged="null")
    assert reasons(r) == [f"host 0 accepted 0 of {size} bytes"]
    assert r.retagged == 0 and r.bytes_offered == size and r.bytes_accepted == 0
    assert any(e["event"] == "extent_refused" and "needs a tag" in e["rule"] for e in o.hosts[0][0].log)
    assert_clean(o, r)
    o, r = run(w)
    assert r.refusals == [] and r.retagged == 1 and r.bytes_released == size
    assert_clean(o, r)


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_a_refused_offer_gives_its_dpa_back_at_once(placement):
    # Linux refuses the untagged offer (shareable partition): its DPA is free on the device
    # at once, and must be in the ledger too: the next allocation (the whole pool) fits, and
    # with placement "device" the device's choice (DPA 0 again) does not clash.
    size = 256 * MiB
    events = [Allocate(0, 0, "untagged", (0,), size, NULL_TAG, [size]), app(10, 1, 1, size),
              Release(20, 0), Release(20, 1)]
    o, r = run(hand(events, pool=size), placement=placement, untagged="null")
    assert reasons(r) == [f"host 0 accepted 0 of {size} bytes"]
    assert r.bytes_offered == 2 * size and r.bytes_accepted == r.bytes_released == size
    assert acts(o, "accept", alloc=1)[0]["bytes"] == size
    assert_clean(o, r)


def test_release_of_an_unknown_allocation_is_refused():
    o, r = run(hand([Release(5, 3)]))
    assert r.refusals == [(5, "release 3", "no such live allocation")]


# ---------------------------------------------------------------------- configuration

BAD_KNOBS = [
    ("presentation", "dimm"), ("placement", "best"), ("untagged", "drop"),
    ("appliances", 0), ("appliances", True), ("appliances", 1.0), ("max_pending", 0),
    ("max_extents", -1), ("linger_ticks", 0), ("retry", 1.5), ("vm_slots", 0),
    ("max_retries", -1), ("max_retries", True), ("linger", 1.5), ("linger", -0.1),
    ("linger", math.nan), ("linger", "0.5"), ("linger", True), ("merge", "no"), ("merge", 1),
]


@pytest.mark.parametrize("knob,value", BAD_KNOBS)
def test_bad_knob_raises_configuration_error(knob, value):
    with pytest.raises(ConfigurationError, match=knob):
        Config(**{knob: value})
    w = hand([])
    with pytest.raises(ConfigurationError, match=knob):
        Orchestrator(w, **{knob: value})
    with pytest.raises(ConfigurationError, match=knob):
        Orchestrator(w, Config(), **{knob: value})


def test_config_and_keywords():
    c = Config(placement="spread", appliances=2)
    assert c.params()["placement"] == "spread" and Config(**c.params()) == c
    w = hand([])
    assert Orchestrator(w, c, retry=7).config == Config(placement="spread", appliances=2, retry=7)
    o = Orchestrator(w, c)
    assert o.config is c and len(o.devices) == 2 and len(o.hosts) == 2 and len(o.hosts[1]) == 2


def test_runs_once_and_empty_workload():
    o, r = run(hand([]))
    assert isinstance(r, Report) and r.final.free == r.final.total == 1 * GiB
    assert r.guest is None and o.actions == []
    with pytest.raises(RuntimeError):
        o.run()
    assert isinstance(run(hand([]), presentation="type3")[1].guest, GuestTotals)


# ---------------------------------------------------------------------- the run trace

@pytest.fixture(scope="module")
def traced():
    w = generate("default", seed=2, duration=200_000)
    o = Orchestrator(w, presentation="type3", linger=0.5, linger_ticks=3_000, retry=1_000)
    o.run()
    buf = io.StringIO()
    o.write_trace(buf)
    return o, buf.getvalue().splitlines()


def test_trace_round_trip(traced):
    o, lines = traced
    assert o.report.deferred > 0 and o.report.retries > 0      # timers are in the trace
    config, workload, actions, report = read_run(lines)
    assert config == o.config
    assert workload == o.workload
    assert actions == json.loads(json.dumps(o.actions))
    assert report == json.loads(json.dumps(o.report.to_dict()))
    head = json.loads(lines[0])
    assert head["format"] == "dcdmap-run" and head["version"] == 1
    assert json.loads(lines[1])["format"] == "dcdmap-trace"
    assert "report" in json.loads(lines[-1])
    again, diff = replay(lines)
    assert diff is None and again.report == o.report


def test_trace_places_timer_actions_as_documented(traced):
    # docs/orchestrator.md: each event is followed by the actions it caused; actions that
    # timers caused follow the event before which they ran; then those after the last event.
    # So the actions after event k have ticks in [tick of event k-1, tick of event k].
    o, lines = traced
    objs = [json.loads(x) for x in lines[2:-1]]
    events = [i for i, obj in enumerate(objs) if "kind" in obj]
    timers = 0
    for k, i in enumerate(events):
        lo = objs[events[k - 1]]["tick"] if k else 0
        end = events[k + 1] if k + 1 < len(events) else len(objs)
        for act in objs[i + 1:end]:
            if end < len(objs):
                assert lo <= act["tick"] <= objs[i]["tick"], (objs[i], act)
            else:
                assert act["tick"] >= lo
            timers += act["tick"] < objs[i]["tick"]
    assert timers > 0                             # the trace does have timer actions
    assert sum("do" in obj for obj in objs) == len(o.actions)


def test_trace_events_are_followed_by_their_actions(traced):
    # an allocation's offer (or its refusal) is among the actions right after its event
    o, lines = traced
    objs = [json.loads(x) for x in lines[2:-1]]
    events = [i for i, obj in enumerate(objs) if "kind" in obj] + [len(objs)]
    n = 0
    for i, end in zip(events, events[1:]):
        ev = objs[i]
        if ev["kind"] == "allocate":
            mine = [a for a in objs[i + 1:end] if a["tick"] == ev["tick"] and
                    (a.get("alloc") == ev["alloc"] or a.get("what") == f"allocate {ev['alloc']}")]
            assert mine and mine[0]["do"] in ("offer", "refused"), (ev, objs[i + 1:end])
            n += 1
    assert n == len(o.workload.allocations())


def test_replay_reports_a_tampered_action(traced):
    o, lines = traced
    idx = [i for i, x in enumerate(lines) if '"do":"accept"' in x][3]
    n = sum('"do":' in x for x in lines[:idx + 1])         # its number among the actions
    obj = json.loads(lines[idx])
    obj["bytes"] += 2 * MiB
    bad = lines[:idx] + [json.dumps(obj)] + lines[idx + 1:]
    _, diff = replay(bad)
    assert diff.startswith(f"action {n} differs")
    # an action dropped: the counts differ (or the next one differs)
    _, diff = replay(lines[:idx] + lines[idx + 1:])
    assert diff.startswith(f"action {n} differs")


def test_replay_reports_a_tampered_report(traced):
    o, lines = traced
    rep = json.loads(lines[-1])
    rep["report"]["bytes_released"] += 1
    _, diff = replay(lines[:-1] + [json.dumps(rep)])
    assert diff == "the final report differs in bytes_released"


def test_replay_reports_missing_actions(traced):
    o, lines = traced
    last = max(i for i, x in enumerate(lines) if '"do":' in x)
    _, diff = replay(lines[:last] + lines[last + 1:])
    n = len(o.actions)
    assert diff == f"the trace has {n - 1} actions, the replay did {n}"


def test_read_run_truncated_and_garbage(traced):
    o, lines = traced
    with pytest.raises(CorruptDataError, match="truncated"):
        read_run(lines[:-1])
    with pytest.raises(CorruptDataError, match="truncated"):
        read_run(lines[:len(lines) // 2])
    with pytest.raises(CorruptDataError, match="^line 6: not JSON"):
        read_run(lines[:5] + ["{not json"] + lines[5:])
    with pytest.raises(CorruptDataError, match="^line 7: not JSON"):
        read_run(lines[:6] + [lines[6][:20]] + lines[7:])    # a line cut short
    with pytest.raises(CorruptDataError, match="^line 4: a JSON object"):
        read_run(lines[:3] + ["[1, 2]"] + lines[3:])
    with pytest.raises(CorruptDataError, match="^line 5: neither a workload event"):
        read_run(lines[:4] + ['{"what": 1}'] + lines[4:])
    with pytest.raises(CorruptDataError, match="^line 1: not a dcdmap-run"):
        read_run(lines[1:])
    hdr = json.loads(lines[0])
    hdr["config"]["placement"] = "best"
    with pytest.raises(CorruptDataError, match="^line 1: bad configuration: placement"):
        read_run([json.dumps(hdr)] + lines[1:])
    hdr["config"] = {"colour": "blue"}
    with pytest.raises(CorruptDataError, match="^line 1: bad configuration"):
        read_run([json.dumps(hdr)] + lines[1:])
    with pytest.raises(CorruptDataError, match="empty"):
        read_run([])
    ev = json.loads(lines[2])
    ev["tick"] = -1
    with pytest.raises(CorruptDataError, match="workload in the run trace"):
        read_run(lines[:2] + [json.dumps(ev)] + lines[3:])
    # blank lines are fine
    assert read_run([""] + lines + [""])[0] == o.config


def test_write_trace_needs_a_run():
    with pytest.raises(RuntimeError):
        Orchestrator(hand([])).write_trace(io.StringIO())


def test_hand_made_trace_replays():
    w = vm_workload("drain", stop=1_000)
    o = Orchestrator(w, presentation="virtio-mem")
    o.run()
    buf = io.StringIO()
    o.write_trace(buf)
    assert replay(buf.getvalue().splitlines())[1] is None


# ---------------------------------------------------------------------- property

@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), duration=st.integers(10_000, 150_000), hosts=st.integers(2, 6),
       placement=st.sampled_from(PLACEMENTS), appliances=st.integers(1, 3),
       presentation=st.sampled_from((None,) + PRESENTATIONS), linger=st.sampled_from([0.0, 0.3, 1.0]),
       untagged=st.sampled_from(["tag", "null"]))
def test_random_runs_conserve(seed, duration, hosts, placement, appliances, presentation, linger,
                              untagged):
    w = generate("default", seed=seed, duration=duration, hosts=hosts)
    o, r = run(w, placement=placement, appliances=appliances, presentation=presentation,
               linger=linger, untagged=untagged, retry=2_000)
    assert_clean(o, r)
    assert r.shared_consistent
    assert sum(r.migrations.values()) == r.counts.get("migrate", 0)
    allocs = {a.alloc: a for a in w.allocations()}
    untagged_ids = {a for a, ev in allocs.items() if ev.kind == "untagged"}
    assert r.retagged == (len(untagged_ids) if untagged == "tag" else 0)
    blocked, linux_refused = 0, set()
    for i, (_, what, why) in enumerate(r.refusals):
        if "migration blocked" in why:
            # only a guest that must offline its memory (best-effort removal) can block
            assert presentation == "hotplug-kmem"
            blocked += 1
        elif why.startswith("no appliance has "):
            # no room: the pool is split over appliances, or lingering applications keep
            # capacity the workload already released
            assert appliances > 1 or linger > 0, why
        elif why == "no such live allocation":
            # the release of an allocation whose re-offer (migration, kexec) found no room
            assert any(x.startswith(("migrate", "kexec")) for _, x, _ in r.refusals[:i]), r.refusals
        else:
            # Linux refuses untagged capacity in a shareable partition, and only that
            alloc = int(what.split()[1])
            assert untagged == "null" and alloc in untagged_ids, (what, why)
            assert why == f"host {allocs[alloc].hosts[0]} accepted 0 of {allocs[alloc].size} bytes"
            linux_refused.add(alloc)
    assert blocked == r.migrations.get("blocked", 0)
    # whatever was offered was accepted, but the untagged capacity Linux refused
    assert r.bytes_offered - r.bytes_accepted == sum(allocs[a].size for a in linux_refused)


def test_a_second_migration_during_a_drain_is_refused(monkeypatch):
    # Type 3 removal made to fall short: the first drain is retried; a second migrate of
    # the same VM meanwhile is refused, not started as a second retry chain.
    from dcdmap.present import Type3Presentation
    from dcdmap.present.base import Removal
    from dcdmap.workload import Migrate

    def short(self, tag, **kw):
        return Removal(tag, 0, 2 * MiB, "release", "held")
    monkeypatch.setattr(Type3Presentation, "remove", short)
    tag = uuid.uuid5(uuid.NAMESPACE_URL, "two-drains")
    w = Workload("hand", 0, {"hosts": 2, "pool_size": 256 * MiB}, (
        VmStart(0, 0, 0, 4 * GiB, 0),
        Allocate(0, 0, "app", (0,), 2 * MiB, tag, [2 * MiB], 0, 0),
        Migrate(10, 0, 1, "drain"),
        Migrate(20, 0, 1, "drain"),
        VmStop(100_000, 0),
        Release(100_000, 0)))
    o = Orchestrator(w, presentation="type3", retry=1000, max_retries=3)
    r = o.run()
    assert [why for _, what, why in r.refusals if what == "migrate 0"][0] == \
        "a drain of this VM is still being retried"
    assert r.migrations == {"blocked": 1}
    assert r.retries == 3


def test_trace_actions_are_snapshots():
    # A stale allocation's host list changes when a host restarts; the action written at the
    # forced release must still name every host that kept it then.
    events = [Host(0, h, 64 * GiB, 0) for h in range(2)] + [
        Allocate(10, 0, "shared", (0, 1), 16 * MiB, tag(1), [16 * MiB]),
        Release(20, 0, forced=True), Kexec(30, 0, "preserve")]
    o, r = run(hand(events, hosts=2))
    assert acts(o, "stale")[0]["hosts"] == [0, 1]
    assert o._stale[0].stale == [1] and r.bytes_stranded == 16 * MiB


# ---------------------------------------------------------------------- the QMP output

@pytest.mark.parametrize("presentation", [None, "hotplug", "type3"])
def test_write_qmp_replays_clean_through_check(presentation):
    # Without forced releases or lingering applications nothing in a run is refused, so its
    # QMP commands and DAX claims must go through QEMU's and Linux's rules with no finding
    # and leave the device as the run left it.
    from dcdmap.check import check_lines
    from dcdmap.workload import generate
    w = generate("default", seed=2, duration=200_000, forced_prob=0.0, kexec_interarrival=50_000.0)
    o, r = run(w, presentation=presentation, linger=0.0)
    assert r.kexecs and r.refusals == []
    buf = io.StringIO()
    o.write_qmp(buf)
    lines = buf.getvalue().splitlines()
    assert json.loads(lines[0])["op"] == "device"
    assert any('"dax":"create"' in line for line in lines)
    report = check_lines(lines)
    assert [str(f) for f in report.findings] == []
    cap = report.state["capacity"]
    assert cap["free"] == cap["total"] == r.final.total


def test_write_qmp_shows_what_linux_ignores_and_defers():
    from dcdmap.check import check_lines
    events = [app(0, 0, 0, 64 * MiB), Release(100, 0),            # lingers: deferred, re-issued
              app(0, 1, 1, 64 * MiB), Release(100, 1, forced=True)]  # forced: Linux ignores it
    events.sort(key=lambda e: e.tick)
    o, r = run(hand(events), linger=1.0, linger_ticks=2_000, retry=1_000)
    buf = io.StringIO()
    o.write_qmp(buf)
    findings = check_lines(buf.getvalue().splitlines()).findings
    rules = sorted({f.rule.split(":")[0] for f in findings if f.source == "linux"})
    assert rules == ["§4.4 DAX device in use", "§4.4 forced release is logged and ignored"]
    assert {f.host for f in findings} == {0, 1}


def test_logs_off_keeps_the_run_the_same():
    # Config(logs=False): the devices and hosts keep no log (long runs), the run is the same.
    from dcdmap.workload import generate
    w = generate("default", seed=3, duration=120_000)
    o1, r1 = run(w, presentation="type3")
    o2, r2 = run(w, presentation="type3", logs=False)
    assert r1 == r2 and o1.actions == o2.actions
    assert [len(d.log) for d in o2.devices] == [1] and all(not h.log for row in o2.hosts for h in row)
    with pytest.raises(ConfigurationError, match="logs"):
        o2.write_qmp(io.StringIO())


def test_a_fragmented_pool_is_placed_in_the_fewest_extents():
    # 125 free 4 MiB holes below one big gap: first fit would cut a 500 MiB allocation into
    # 125 pieces (over Linux's 100-record chain), so the orchestrator takes the largest gaps
    # first: one extent, in the big gap.
    size = 500 * MiB
    events = [app(0, i, 0, 4 * MiB) for i in range(250)]
    events += [Release(1, i) for i in range(0, 250, 2)]
    events += [app(2, 1000, 1, size, extents=[2 * MiB] * 250), Release(3, 1000)]
    events += [Release(4, i) for i in range(1, 250, 2)]
    o, r = run(hand(events, pool=2 * GiB), linger=0.0)
    assert r.refusals == []
    assert acts(o, "offer", alloc=1000)[0]["extents"] == 1
    assert acts(o, "accept", alloc=1000)[0]["bytes"] == size
    # without merging the extents are offered as drawn: Linux drops the chain
    o, r = run(hand(events, pool=2 * GiB), linger=0.0, merge=False)
    assert reasons(r) == [f"host 1 accepted 0 of {size} bytes"]


def test_ledger_first_fit_is_the_plain_first_fit():
    # The floors only skip what cannot fit: every answer equals a search from the region
    # base, through random takes and give-backs of many sizes.
    from dcdmap.orchestrator import _Ledger
    rng = np.random.default_rng(7)
    block = 2 * MiB
    led = _Ledger(0, 4 * GiB, block)
    held = []
    for step in range(3000):
        if held and rng.random() < 0.45:
            s, n = held.pop(int(rng.integers(len(held))))
            led.remove_many(np.array([s], np.uint64), np.array([n], np.uint64))
            continue
        size = int(rng.integers(1, 40)) * block
        want = led.map.find_free(size, align=block, lo=0, hi=4 * GiB)
        got = led.first_fit(size)
        assert got == want, step
        if got is not None:
            led.map.insert(got, size)
            held.append((got, size))


def test_extents_off_the_block_are_refused_not_crashed():
    o, r = run(hand([app(0, 0, 0, 4 * MiB, extents=[1 * MiB, 3 * MiB]), Release(5, 0)]))
    assert reasons(r)[0].startswith("extent sizes must be multiples of the appliances'")
    assert r.bytes_offered == 0
