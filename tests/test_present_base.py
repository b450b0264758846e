"""The shared parts of the presentations: the guest address space, the Linux memory-block
model and the x86 memory block size (presentations.md §0)."""
from __future__ import annotations

import errno

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dcdmap.errors import ConfigurationError, HostError, InvalidRangeError
from dcdmap.present import GuestAddressSpace, MemoryBlocks, Metrics, x86_memory_block_size

MiB, GiB = 1 << 20, 1 << 30


# ----------------------------------------------------------------------------- x86 block size

@pytest.mark.parametrize("end, kw, want", [
    (8 * GiB, {}, 128 * MiB),                          # boot memory below 64 GiB: 128 MiB
    (63 * GiB, {}, 128 * MiB),
    (64 * GiB, {}, 2 * GiB),                           # VM: largest power of two <= 2 GiB dividing the end
    (65 * GiB, {}, 1 * GiB),
    (64 * GiB + 128 * MiB, {}, 128 * MiB),
    (65 * GiB, {"hypervisor": False}, 2 * GiB),        # bare metal: 2 GiB
    (96 * GiB, {"advice": 256 * MiB}, 256 * MiB),      # CFMWS advice clamps
    (96 * GiB, {"advice": 64 * MiB}, 128 * MiB),       # ... to at least 128 MiB
    (96 * GiB, {"advice": 8 * GiB}, 2 * GiB),          # ... and at most 2 GiB
    (8 * GiB, {"order": 30}, 1 * GiB),                 # an explicit order wins
])
def test_0_x86_probe_memory_block_size(end, kw, want):
    """§0 probe_memory_block_size: the decision order of the newest rules."""
    assert x86_memory_block_size(end, **kw) == want


# ----------------------------------------------------------------------------- memory blocks

def blocks(**kw):
    kw.setdefault("seed", 3)
    return MemoryBlocks(128 * MiB, **kw)


@pytest.mark.parametrize("start, size", [(4 * GiB + MiB, 128 * MiB), (4 * GiB, 64 * MiB), (4 * GiB, 0)])
def test_0_add_memory_needs_block_alignment(start, size):
    """§0 add_memory(): start and size aligned to the memory block size, size > 0, else EINVAL."""
    mb = blocks()
    with pytest.raises(HostError) as e:
        mb.add_memory(start, size)
    assert e.value.errno == errno.EINVAL and len(mb) == 0


def test_0_add_memory_overlap_and_pluggable_range():
    """§0: an overlap with memory already added is EEXIST; past the pluggable range E2BIG."""
    mb = blocks(max_phys_bits=36)
    mb.add_memory(4 * GiB, 256 * MiB)
    with pytest.raises(HostError) as e:
        mb.add_memory(4 * GiB + 128 * MiB, 256 * MiB)
    assert e.value.errno == errno.EEXIST and len(mb) == 2
    with pytest.raises(HostError) as e:
        mb.add_memory(64 * GiB - 128 * MiB, 256 * MiB)
    assert e.value.errno == errno.E2BIG and len(mb) == 2


@pytest.mark.parametrize("auto, policy, zone", [
    ("online_movable", "contig-zones", "Movable"),
    ("online_kernel", "auto-movable", "Normal"),
    ("online", "auto-movable", "Movable"),
    ("online", "contig-zones", "Normal"),
    ("offline", "auto-movable", None),
])
def test_0_auto_online_and_zones(auto, policy, zone):
    """§0 onlining: auto_online_blocks and the online policy pick the zone."""
    mb = blocks(auto_online=auto, online_policy=policy)
    ids = mb.add_memory(4 * GiB, 256 * MiB)
    assert [mb.zone_of(i) for i in ids] == [zone, zone]
    assert mb.online_bytes() == (0 if zone is None else 256 * MiB)


def test_0_state_transitions_and_their_errors():
    """§0: online an online block, or offline an offline one, is EINVAL; an unknown state too."""
    mb = blocks(auto_online="offline")
    (i,) = mb.add_memory(4 * GiB, 128 * MiB)
    with pytest.raises(HostError) as e:
        mb.offline(i)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(HostError) as e:
        mb.online(i, "online_sideways")
    assert e.value.errno == errno.EINVAL
    mb.online(i, "online_movable")
    with pytest.raises(HostError) as e:
        mb.online(i)
    assert e.value.errno == errno.EINVAL and mb.zone_of(i) == "Movable"


def test_0_offline_failure_is_ebusy_and_all_or_nothing():
    """§0 offline_pages(): unmovable or pinned pages are EBUSY and change nothing; removing a
    range rolls back the blocks it had already offlined."""
    mb = blocks(auto_online="online_kernel", online_policy="contig-zones", p_fail_normal=0.5)
    ids = mb.add_memory(4 * GiB, 16 * 128 * MiB)
    removed, err = mb.offline_and_remove(4 * GiB, 16 * 128 * MiB)
    assert removed == 0 and err.errno == errno.EBUSY
    assert all(mb.state[i] == "online" and mb.zone_of(i) == "Normal" for i in ids)
    assert mb.failed_offlines == 1


def test_0_movable_offlines_far_more_often_than_normal():
    """§0: ZONE_MOVABLE holds only movable pages; the seeded model makes its offline failures
    rare and ZONE_NORMAL's common."""
    def failures(how):
        mb = blocks(auto_online=how, online_policy="contig-zones", seed=11)
        mb.add_memory(4 * GiB, 400 * 128 * MiB)
        n = 0
        for i in range(32, 32 + 400):
            try:
                mb.offline(i)
            except HostError:
                n += 1
        return n
    assert failures("online_movable") < 20 < failures("online_kernel")


def test_0_bad_memory_block_configuration():
    with pytest.raises(ConfigurationError):
        MemoryBlocks(64 * MiB)
    with pytest.raises(ConfigurationError):
        MemoryBlocks(3 * 128 * MiB)
    with pytest.raises(ConfigurationError):
        MemoryBlocks(auto_online="sometimes")


# ----------------------------------------------------------------------------- guest address space

def test_guest_address_space_place_reserve_release():
    gas = GuestAddressSpace(base=4 * GiB, size=8 * GiB)
    a = gas.place(hpa=1 << 40, length=256 * MiB, align=GiB, label=1)
    gas.reserve(a + 256 * MiB, GiB - 256 * MiB, label=1)             # a DIMM's alignment slack
    b = gas.place(hpa=(1 << 40) + GiB, length=128 * MiB, align=128 * MiB, label=2)
    assert (a, b) == (4 * GiB, 5 * GiB) and gas.used == GiB + 128 * MiB
    assert gas.to_hpa(b + 64) == (1 << 40) + GiB + 64
    with pytest.raises(InvalidRangeError):
        gas.place(hpa=0, length=128 * MiB, align=128 * MiB, label=3, gpa=a + 512 * MiB)   # reserved
    with pytest.raises(HostError) as e:
        gas.place(hpa=0, length=8 * GiB, align=GiB, label=3)
    assert e.value.errno == errno.ENOSPC and gas.used == GiB + 128 * MiB
    assert gas.release(a, GiB) == GiB and gas.used == 128 * MiB


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 8), st.sampled_from([1, 2, 4]), st.booleans()), max_size=25))
def test_guest_address_space_first_fit_never_overlaps(ops):
    """Placement is first fit at the alignment, inside the window, never over mapped or
    reserved GPA."""
    unit = 128 * MiB
    gas = GuestAddressSpace(base=0, size=64 * unit)
    taken = np.zeros(64, bool)
    for k, (n, align, slack) in enumerate(ops):
        length = n * unit
        want = next((s for s in range(0, 64 - n + 1, align) if not taken[s:s + n].any()), None)
        if want is None:
            with pytest.raises(HostError):
                gas.place(0, length, align * unit, k)
            continue
        gpa = gas.place(0, length, align * unit, k)
        assert gpa == want * unit
        taken[want:want + n] = True
        if slack and want + n < 64 and not taken[want + n]:
            gas.reserve((want + n) * unit, unit, k)
            taken[want + n] = True
    assert gas.used == int(taken.sum()) * unit


def test_metrics_count():
    m = Metrics()
    m.count("acpi_notify")
    m.count("acpi_notify", 2)
    assert m.control_ops == {"acpi_notify": 3}


def test_0_auto_movable_ratio_limits_zone_movable():
    """§0 online_policy=auto-movable: `online` goes to ZONE_MOVABLE while MOVABLE <= 301 % of
    KERNEL memory (24 GiB hot-plugged onto an 8 GiB VM is the reference's example); past it,
    blocks go to Normal, which raises the limit again."""
    mb = MemoryBlocks(128 * MiB, auto_online="online", online_policy="auto-movable",
                      kernel_bytes=8 * GiB, seed=1)
    ids = mb.add_memory(16 * GiB, 24 * GiB)
    assert {mb.zone_of(i) for i in ids} == {"Movable"}
    more = mb.add_memory(40 * GiB, GiB)
    zones = [mb.zone_of(i) for i in more]
    assert zones[0] == "Normal" and "Movable" in zones
    movable = sum(z == "Movable" for z in mb.zone.values()) * 128 * MiB
    kernel = 8 * GiB + sum(z == "Normal" for z in mb.zone.values()) * 128 * MiB
    assert movable * 100 <= 301 * kernel
    unlimited = MemoryBlocks(128 * MiB, auto_online="online", online_policy="auto-movable")
    assert {unlimited.zone_of(i) for i in unlimited.add_memory(16 * GiB, 64 * GiB)} == {"Movable"}
