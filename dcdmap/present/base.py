"""What every presentation shares: the metrics, the guest physical address space, the Linux
guest's memory-block model, and the Presentation interface (reference: presentations.md §0).

A presentation takes a host's accepted capacity (a :class:`~dcdmap.cxl.TagGroup`: its
tag, its extents, its contiguous view over HPAs) and places it in a VM's guest physical
address space.  The GPA layout is an engine map, GPA -> HPA, with one label per guest
object; the host's map HPA -> DPA comes from the host model, so a guest address is
translated down to the device in one chained pass::

    GPA --(Presentation.gpa_map)--> HPA --(Host.media_map)--> DPA

    >>> from dcdmap.present.base import GuestAddressSpace
    >>> gas = GuestAddressSpace(base=4 << 30, size=64 << 30)
    >>> gpa = gas.place(hpa=1 << 40, length=256 << 20, align=128 << 20, label=1)
    >>> hex(gpa), hex(gas.to_hpa(gpa + 64))
    ('0x100000000', '0x10000000040')
"""
from __future__ import annotations

import errno as E
import random
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .._core import Chain, ExtentMap
from ..errors import ConfigurationError, HostError, InvalidRangeError

__all__ = [
    "Metrics", "Removal", "Lifecycle", "GuestAddressSpace", "MemoryBlocks", "Presentation",
    "GUARANTEED", "BEST_EFFORT", "SHUTDOWN_ONLY", "SECTION_SIZE", "x86_memory_block_size",
]

MiB, GiB = 1 << 20, 1 << 30
SECTION_SIZE = 128 * MiB          # x86-64 SPARSEMEM section, the smallest memory block
MAX_BLOCK_SIZE = 2 * GiB
LARGE_BLOCK_MEM = 64 * GiB        # MEM_SIZE_FOR_LARGE_BLOCK

# How capacity can be taken back from the guest.
GUARANTEED = "guaranteed"         # the host can always take it back (devdax, no guest cooperation)
BEST_EFFORT = "best-effort"       # the guest must offline it; that can fail (pinned/unmovable pages)
SHUTDOWN_ONLY = "shutdown-only"   # only by stopping the VM


@dataclass
class Metrics:
    """What presenting capacity costs, in the same units for every presentation.

    gpa_used: guest physical bytes taken (mapped, reserved or burned); gpa_wasted: of those,
    bytes that can never hold presented capacity (rounding to blocks, alignment, burned
    space); presented: bytes of device capacity the guest can reach.  gpa_used may exceed
    presented + gpa_wasted by space reserved for growth (a virtio-mem region's unplugged
    part); objects: what the guest sees, by kind;
    control_ops: operations issued, by kind (ACPI notifications, virtio-mem requests,
    mailbox commands, events); removal: GUARANTEED, BEST_EFFORT or SHUTDOWN_ONLY, with the
    risks that can make it fail; tag_discoverable: software in the guest can find the
    capacity by its tag (R1); shared_out_of_ram: shared capacity is kept out of System RAM
    (R3).
    """

    gpa_used: int = 0
    gpa_wasted: int = 0
    presented: int = 0
    objects: Dict[str, int] = field(default_factory=dict)
    control_ops: Dict[str, int] = field(default_factory=dict)
    removal: str = GUARANTEED
    removal_risks: Tuple[str, ...] = ()
    tag_discoverable: bool = False
    shared_out_of_ram: bool = True

    def count(self, kind: str, n: int = 1) -> None:
        """Add n control operations of a kind."""
        self.control_ops[kind] = self.control_ops.get(kind, 0) + n


@dataclass(frozen=True)
class Lifecycle:
    """What a VM lifecycle event costs with the presented capacity, in the same terms for
    every presentation (RFC §1.8): ``event`` is "migrate", "kexec" or "kdump"; ``policy`` the
    choice made (e.g. "drain" / "prepopulate", "release" / "keep"); ``feasible`` whether it
    can be done at all; bytes ``returned`` to the host (drained, released), ``kept`` by the
    guest across the event (preserved, pre-populated on the destination), ``stuck`` (could
    not be given back), ``copied`` (migrated or dumped); ``control_ops`` issued, by kind (the
    delta of Metrics.control_ops, or the destination's work); ``note``: one line on what
    happens; ``details``: model-specific extras.
    """

    event: str
    policy: str
    feasible: bool
    returned: int = 0
    kept: int = 0
    stuck: int = 0
    copied: int = 0
    control_ops: Dict[str, int] = field(default_factory=dict)
    note: str = ""
    details: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Removal:
    """The outcome of taking capacity back: how many bytes came back, how, and why not."""

    tag: Any
    returned: int
    requested: int
    how: str
    reason: str = ""

    @property
    def complete(self) -> bool:
        return self.returned == self.requested


class GuestAddressSpace:
    """A window of guest physical addresses, ``[base, base + size)``, and what is mapped in
    it: an ExtentMap GPA -> HPA whose labels name guest objects.  Placement is first fit at an
    alignment, by the engine's free-space search; ``reserve`` takes GPA with no backing (a
    DIMM's alignment slack, burned space), recorded in a second map so that it counts as
    used.  Errors leave the space unchanged.
    """

    def __init__(self, base: int, size: int, granule: int = 64) -> None:
        if size <= 0 or base < 0 or base + size > 1 << 64:
            raise ConfigurationError(f"bad guest address window [{base:#x}, +{size:#x})")
        self.base, self.size = base, size
        self.map = ExtentMap(granule)          # GPA -> HPA, label = object id
        self.reserved = ExtentMap(granule)     # GPA taken without backing, label = object id

    def _fits(self, gpa: int, length: int) -> bool:
        return self.base <= gpa and gpa + length <= self.base + self.size and \
            not self.map.classify_many([gpa], [length])[0] and not self.reserved.classify_many([gpa], [length])[0]

    def find(self, length: int, align: int) -> Optional[int]:
        """The lowest aligned GPA where ``length`` bytes are free (mapped and reserved), or None."""
        lo, hi = self.base, self.base + self.size
        while True:
            a = self.map.find_free(length, align=align, lo=lo, hi=hi)
            if a is None:
                return None
            b = self.reserved.find_free(length, align=align, lo=a, hi=hi)
            if b is None:
                return None
            if b == a or self._fits(b, length):
                return b
            lo = b                                   # both maps move forward; retry from there

    def place(self, hpa: int, length: int, align: int, label: int, gpa: Optional[int] = None) -> int:
        """Map ``length`` bytes at ``gpa`` (or first fit at ``align``) to ``hpa``; the GPA."""
        if gpa is None:
            gpa = self.find(length, align)
            if gpa is None:
                raise HostError(f"no {length:#x} bytes of guest address space at alignment {align:#x}", E.ENOSPC)
        elif gpa % align or not self._fits(gpa, length):
            raise InvalidRangeError(f"GPA [{gpa:#x}, +{length:#x}) is misaligned, outside the window or in use")
        self.map.insert(gpa, length, hpa, label)
        return gpa

    def map_view(self, gpa: int, view: Any, label: int) -> None:
        """Map a tag view (a :class:`~dcdmap.TagView`) at ``gpa``: logical offset o of the view
        is GPA ``gpa + o``, translating to the view's HPA for o, piece by piece.  The range must
        be free."""
        seg = view.segments()
        if not self._fits(gpa, view.size):
            raise InvalidRangeError(f"GPA [{gpa:#x}, +{view.size:#x}) is outside the window or in use")
        self.map.insert_many(seg.logical_starts + np.uint64(gpa), seg.lengths, seg.host_starts,
                             np.full(len(seg.lengths), label, np.uint32))

    def reserve(self, gpa: int, length: int, label: int) -> None:
        """Take ``length`` bytes at ``gpa`` without backing (they count as used GPA)."""
        if not self._fits(gpa, length):
            raise InvalidRangeError(f"GPA [{gpa:#x}, +{length:#x}) is outside the window or in use")
        self.reserved.insert(gpa, length, gpa, label)

    def release(self, gpa: int, length: int) -> int:
        """Unmap and unreserve ``[gpa, gpa + length)``; the bytes freed."""
        return self.map.remove(gpa, length) + self.reserved.remove(gpa, length)

    def to_hpa(self, gpa: int) -> int:
        return self.map.translate(gpa)

    @property
    def used(self) -> int:
        """GPA bytes taken, mapped or reserved."""
        return self.map.mapped_bytes + self.reserved.mapped_bytes


def x86_memory_block_size(boot_mem_end: int, *, hypervisor: bool = True, advice: Optional[int] = None,
                          order: Optional[int] = None) -> int:
    """Linux x86-64 ``probe_memory_block_size`` (presentations.md §0), newest rules.

    >>> x86_memory_block_size(16 << 30) >> 20                 # small VM: 128 MiB
    128
    >>> x86_memory_block_size(96 << 30) >> 20                 # VM: largest power of two dividing the end
    2048
    >>> x86_memory_block_size(65 << 30) >> 20
    1024
    """
    if order is not None:
        return 1 << order
    if boot_mem_end < LARGE_BLOCK_MEM:
        return SECTION_SIZE
    limit = MAX_BLOCK_SIZE
    if advice is not None:
        limit = min(max(advice, SECTION_SIZE), MAX_BLOCK_SIZE)
    elif not hypervisor:
        return MAX_BLOCK_SIZE
    size = 1 << (limit.bit_length() - 1)
    while size > SECTION_SIZE and boot_mem_end % size:
        size >>= 1
    return size


ZONES = ("Normal", "Movable")
ONLINE_TYPES = ("offline", "online", "online_kernel", "online_movable")


class MemoryBlocks:
    """The Linux guest's memory blocks (presentations.md §0): add_memory, online, offline,
    remove, with the kernel's preconditions and errno values, and a seeded model of why
    offlining fails.

    ``auto_online``: the value of ``auto_online_blocks`` (offline | online | online_kernel |
    online_movable); ``online`` goes to Normal under ``contig-zones``, and under the
    ``auto-movable`` policy to ZONE_MOVABLE while ``auto_movable_ratio`` (percent, default
    301) allows it: MOVABLE memory ≤ ratio × KERNEL memory, where KERNEL counts
    ``kernel_bytes`` (the boot memory; None = no limit) and the blocks onlined to Normal.  ``p_fail_normal`` / ``p_fail_movable``: the chance that
    offlining one block fails with EBUSY (unmovable or long-term pinned pages; ZONE_MOVABLE
    holds only movable pages, so its chance is small but not zero: CMA, gigantic pages).

    >>> mb = MemoryBlocks(block_size=128 << 20, auto_online="online_movable", seed=1)
    >>> mb.add_memory(4 << 30, 256 << 20, owner="dimm0")
    [32, 33]
    >>> mb.zone_of(32), mb.online_bytes()
    ('Movable', 268435456)
    """

    def __init__(self, block_size: int = SECTION_SIZE, *, auto_online: str = "online_movable",
                 online_policy: str = "auto-movable", p_fail_normal: float = 0.3,
                 p_fail_movable: float = 0.01, max_phys_bits: int = 46, seed: int = 0,
                 kernel_bytes: Optional[int] = None, auto_movable_ratio: int = 301) -> None:
        if block_size < SECTION_SIZE or block_size & (block_size - 1):
            raise ConfigurationError(f"memory block size {block_size:#x} is not a power of two >= 128 MiB")
        if auto_online not in ONLINE_TYPES:
            raise ConfigurationError(f"auto_online must be one of {ONLINE_TYPES}")
        if online_policy not in ("contig-zones", "auto-movable"):
            raise ConfigurationError("online_policy must be contig-zones or auto-movable")
        self.block_size = block_size
        self.auto_online = auto_online
        self.online_policy = online_policy
        self.p_fail = {"Normal": p_fail_normal, "Movable": p_fail_movable}
        self.kernel_bytes = kernel_bytes
        self.auto_movable_ratio = auto_movable_ratio
        self.max_phys = 1 << max_phys_bits
        self._rng = random.Random(seed)
        self.state: Dict[int, str] = {}          # block id -> "offline" | "online"
        self.zone: Dict[int, Optional[str]] = {}
        self.owner: Dict[int, Any] = {}
        self.failed_offlines = 0

    def _ids(self, start: int, size: int) -> range:
        return range(start // self.block_size, (start + size) // self.block_size)

    def add_memory(self, start: int, size: int, owner: Any = None) -> List[int]:
        """add_memory(): the new blocks, offline, then auto-onlined.  EINVAL when start or size
        is not block-aligned or size is 0; E2BIG past the pluggable range; EEXIST on overlap."""
        bs = self.block_size
        if size <= 0 or start % bs or size % bs:
            raise HostError(f"add_memory [{start:#x}, +{size:#x}) is not aligned to the "
                            f"memory block size {bs:#x}", E.EINVAL)
        if start + size > self.max_phys:
            raise HostError(f"add_memory [{start:#x}, +{size:#x}) is past the pluggable range", E.E2BIG)
        ids = list(self._ids(start, size))
        if any(i in self.state for i in ids):
            raise HostError(f"add_memory [{start:#x}, +{size:#x}) overlaps memory already added", E.EEXIST)
        for i in ids:
            self.state[i], self.zone[i], self.owner[i] = "offline", None, owner
        if self.auto_online != "offline":
            for i in ids:
                self._online(i, self.auto_online)
        return ids

    def _online(self, i: int, how: str) -> None:
        if how == "online_movable" or (how == "online" and self.online_policy == "auto-movable"
                                       and self._movable_allowed()):
            self.zone[i] = "Movable"
        else:
            self.zone[i] = "Normal"
        self.state[i] = "online"

    def _movable_allowed(self) -> bool:
        """The auto-movable policy's ratio check for one more block in ZONE_MOVABLE."""
        if self.kernel_bytes is None:
            return True
        zones = list(self.zone.values())
        movable = (zones.count("Movable") + 1) * self.block_size
        kernel = self.kernel_bytes + zones.count("Normal") * self.block_size
        return movable * 100 <= self.auto_movable_ratio * kernel

    def online(self, i: int, how: str = "online") -> None:
        """Write ``how`` to memoryN/state: EINVAL for an unknown string or a block already online."""
        if how not in ONLINE_TYPES[1:]:
            raise HostError(f"memory{i}: unknown state {how!r}", E.EINVAL)
        if self.state.get(i) != "offline":
            raise HostError(f"memory{i} is not an offline block", E.EINVAL)
        self._online(i, how)

    def offline(self, i: int) -> None:
        """Offline one block: EINVAL if it is not online; EBUSY (state unchanged) when pages
        cannot be migrated away (the seeded failure model, by zone)."""
        if self.state.get(i) != "online":
            raise HostError(f"memory{i} is not an online block", E.EINVAL)
        if self._rng.random() < self.p_fail[self.zone[i] or "Normal"]:
            self.failed_offlines += 1
            raise HostError(f"memory{i}: unmovable or pinned pages in ZONE_{(self.zone[i] or 'Normal').upper()}",
                            E.EBUSY)
        self.state[i], self.zone[i] = "offline", None

    def offline_and_remove(self, start: int, size: int) -> Tuple[int, Optional[HostError]]:
        """Offline every block of the range, then remove them all; all or nothing: on the first
        failure the blocks already offlined are onlined again.  (bytes removed, error)."""
        ids = list(self._ids(start, size))
        done: List[Tuple[int, Optional[str]]] = []
        for i in ids:
            if self.state.get(i) == "online":
                zone = self.zone[i]
                try:
                    self.offline(i)
                except HostError as err:
                    for j, z in done:                      # roll back
                        self.state[j], self.zone[j] = "online", z
                    return 0, err
                done.append((i, zone))
        for i in ids:
            self.state.pop(i, None)
            self.zone.pop(i, None)
            self.owner.pop(i, None)
        return len(ids) * self.block_size, None

    def forget(self, ids: Any) -> None:
        """Drop blocks without offlining them: the kernel that had them is gone (a reboot,
        kexec)."""
        for i in ids:
            self.state.pop(i, None)
            self.zone.pop(i, None)
            self.owner.pop(i, None)

    def zone_of(self, i: int) -> Optional[str]:
        return self.zone.get(i)

    def online_bytes(self) -> int:
        return sum(self.block_size for s in self.state.values() if s == "online")

    def __len__(self) -> int:
        return len(self.state)


class Presentation:
    """The interface the three presentations share.  A subclass presents tag groups of one
    host to one VM and keeps :attr:`gas` (its guest address space) and :attr:`metrics`.

    ``add(group)`` presents a tag group (a :class:`~dcdmap.cxl.TagGroup`); ``remove(tag)``
    takes it back and returns a :class:`Removal`; ``translate_many(gpas)`` gives (HPA, DPA)
    arrays through the chained maps; ``guest_objects()`` lists what the guest sees.
    Migration, kexec and kdump are methods too (``migrate``, ``kexec``, ``kdump``).
    """

    name = "presentation"

    def __init__(self, host: Any, gas: GuestAddressSpace) -> None:
        self.host = host
        self.gas = gas
        self.metrics = Metrics()

    def add(self, group: Any) -> Any:
        raise NotImplementedError

    def remove(self, tag: Any) -> Removal:
        raise NotImplementedError

    def guest_objects(self) -> List[Dict[str, Any]]:
        raise NotImplementedError

    def translate_many(self, gpas: Any, missing: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """GPA -> (HPA, DPA) for many addresses, one chained C pass each (``missing`` fills
        addresses the guest has no device memory at; without it they raise UnmappedError)."""
        hpa = Chain([self.gas.map]).translate_many(gpas, missing)
        dpa = Chain([self.gas.map, self.host.media_map()]).translate_many(gpas, missing)
        return hpa, dpa

    def translate(self, gpa: int) -> Tuple[int, int]:
        hpa, dpa = self.translate_many([gpa])
        return int(hpa[0]), int(dpa[0])
