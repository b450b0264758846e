"""ACPI DIMM hot-plug of a host's tag groups into a QEMU x86 VM (presentations.md §1a, §1b).

The model, in one paragraph: each tag group the host holds is presented as **one pc-dimm**
whose memory backend is a ``memory-backend-file`` on the host DAX device of the tag
(``object_add memory-backend-file,mem-path=/dev/dax0.N`` then ``device_add pc-dimm``).  The
VMM checks the plug the way QEMU does (slot, space, alignment, placement, in that order) and
maps the DIMM's guest physical range piecewise through the group's view, so that a GPA
translates to exactly the HPA the host's DAX device gives at that offset.  The guest then
handles the DIMM as Linux does: with ``soft_reserved`` (EFI_MEMORY_SP) the range becomes an
hmem device-dax (optionally onlined by ``dax_kmem``), otherwise the ACPI memory-hotplug
driver (PNP0C80) calls ``add_memory`` on the whole DIMM.

Layout of the guest physical address space (q35)::

    [0, lowmem)   boot RAM below the 32-bit PCI hole      lowmem = min(ram, 2 or 2.75 GiB)
    [4 GiB, 4 GiB + ram - lowmem)   the rest of boot RAM  -> boot_mem_end
    [ROUND_UP(4 GiB + ram - lowmem, 1 GiB), +(maxmem - ram) + 1 GiB * slots)   device memory (DIMMs)

    >>> import uuid
    >>> from dcdmap.cxl import Device, Region, Host
    >>> from dcdmap.present.hotplug import HotplugPresentation
    >>> dev = Device([Region(base=0, length=4 << 30, shareable=False)], seed=1)
    >>> host = Host(dev)
    >>> tag = uuid.UUID(int=1)
    >>> _ = dev.add_capacity(0, 0, policy="free", length=512 << 20, tag=tag); host.poll()
    >>> vm = HotplugPresentation(host, ram=8 << 30, slots=4, maxmem=16 << 30, tag_extension=True)
    >>> dimm = vm.add(host.group(tag))
    >>> hex(dimm["gpa"]), dimm["size"] >> 20, dimm["slot"], dimm["state"]
    ('0x280000000', 512, 0, 'devdax')
    >>> hpa, dpa = vm.translate(dimm["gpa"] + 4096)
    >>> hpa == host.group(tag).view.translate(4096)
    True
    >>> vm.metrics.presented >> 20, vm.metrics.control_ops
    (512, {'qmp': 2, 'acpi_notify': 1})
    >>> vm.remove(tag).complete
    True

Choices where the reference is silent or UNCONFIRMED are listed in
the hot-plug section of ``docs/presentations.md``.  Every refused operation raises (HostError with an
errno, or ConfigurationError) and changes nothing: no GPA, no slot, no host DAX device, no
guest object, no control-op count.
"""
from __future__ import annotations

import errno as E
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple


from ..errors import ConfigurationError, HostError
from .base import (
    BEST_EFFORT, GuestAddressSpace, Lifecycle, MemoryBlocks, Presentation, Removal, x86_memory_block_size,
)

__all__ = ["HotplugPresentation", "q35_ram_split", "q35_boot_mem_end", "ACPI_MAX_RAM_SLOTS", "TARGET_PAGE_SIZE", "HMEM_ALIGN"]

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
FOUR_GIB = 4 * GiB
ACPI_MAX_RAM_SLOTS = 256          # the ACPI naming scheme supports 256 memory devices
TARGET_PAGE_SIZE = 4 * KiB        # x86 target page: maxmem and the legacy DIMM alignment
RAM_ROUND = 8 * KiB               # QEMU rounds -m size up to 8 KiB
SLOT_SLACK = 1 * GiB              # enforce_aligned_dimm: 1 GiB of alignment slack per slot
HMEM_ALIGN = 2 * MiB              # dax_hmem region alignment (PMD_SIZE on x86-64)
NULL_UUID = uuid.UUID(int=0)


def q35_ram_split(ram: int) -> Tuple[int, int]:
    """Boot RAM below and above 4 GiB on a q35 machine (pc_q35_init): 2 GiB below 4 GiB when
    ram >= 2.75 GiB, else all of it (up to 2.75 GiB) below.

    >>> [x >> 30 for x in q35_ram_split(16 << 30)]
    [2, 14]
    """
    below = min(ram, 2 * GiB if ram >= 0xB000_0000 else 0xB000_0000)
    return below, ram - below


def q35_boot_mem_end(ram: int) -> int:
    """The guest physical address where boot RAM ends (the first byte after it)."""
    below, above = q35_ram_split(ram)
    return FOUR_GIB + above if above else below


def _round_up(x: int, a: int) -> int:
    return -(-x // a) * a


def _round_down(x: int, a: int) -> int:
    return x // a * a


@dataclass(eq=False)
class _Dimm:
    """One plugged pc-dimm and what the guest made of it."""

    label: int                      # engine label of its GPA extents
    slot: int
    tag: uuid.UUID
    group: Any = field(repr=False)
    dax: Any = field(repr=False)    # the host DAX device backing it (memory-backend-file)
    gpa: int
    size: int
    align: int
    shareable: bool
    state: str = "plugged"          # guest view: see HotplugPresentation._attach
    usable: Tuple[int, int] = (0, 0)     # GPA range the guest can use, [lo, hi)
    blocks: List[int] = field(default_factory=list)
    guest_dax: bool = False         # a device-dax (hmem) exists on the range
    stuck: str = ""                 # why a later unplug cannot succeed (kmem one-shot removal)

    @property
    def id(self) -> str:
        return f"dimm{self.label}"


class HotplugPresentation(Presentation):
    """Tag groups of one host as hot-plugged pc-dimms of one QEMU q35 VM (§1a, §1b).

    Parameters
    ----------
    host : the :class:`~dcdmap.cxl.Host` whose tag groups are presented.
    ram : boot RAM (``-m size``), bytes; rounded up to 8 KiB as QEMU does.
    slots : DIMM slots (``-m ...,slots=N``), at most 256 (ACPI_MAX_RAM_SLOTS).
    maxmem : ``-m ...,maxmem=M`` (default: ``ram``, i.e. no device memory).  ``maxmem - ram``
        is the most DIMM bytes that can be plugged at once.
    enforce_aligned_dimm : newer machine types: the device-memory region has 1 GiB of slack
        per slot and a DIMM is aligned to its backend's page size; False (legacy machine
        types): no slack and every DIMM is aligned to the 4 KiB target page only.
    align : the backend page size / alignment of a DIMM's memory backend (default 2 MiB, the
        alignment of a host device-dax); ``add(align=...)`` overrides it per DIMM.
    soft_reserved : firmware marks the DIMM ranges EFI_MEMORY_SP, so Linux keeps them out of
        System RAM and dax_hmem turns each into a device-dax (align 2 MiB); False: the ACPI
        memory-hotplug driver adds the DIMM as System RAM.
    kmem : with ``soft_reserved``, dax_kmem onlines each device-dax as System RAM
        (``daxctl reconfigure-device --mode=system-ram``), trimmed inward to memory blocks.
    tag_extension : the assumed ACPI extension that carries the tag with the DIMM (none
        exists, RFC §1.6 option 1); without it the guest cannot find capacity by tag (R1)
        and guest objects show ``tag=None``.
    auto_online, online_policy : ``auto_online_blocks`` and ``memory_hotplug.online_policy``
        of the guest (:class:`~dcdmap.present.base.MemoryBlocks`); defaults are the kernel
        defaults with the usual distribution udev rule: ``online`` under ``contig-zones``
        (ZONE_NORMAL).
    p_fail_normal, p_fail_movable : the chance that offlining one memory block fails (EBUSY),
        by zone; seeded by ``seed``.
    phys_bits : guest physical address bits (the pluggable range), default 46.

    Raises ConfigurationError, naming QEMU's ``-m`` rule, for an impossible machine.
    """

    name = "hotplug"

    def __init__(self, host: Any, *, ram: int, slots: int = 0, maxmem: Optional[int] = None,
                 enforce_aligned_dimm: bool = True, align: int = 2 * MiB, soft_reserved: bool = True,
                 kmem: bool = False, tag_extension: bool = False, auto_online: str = "online",
                 online_policy: str = "contig-zones", p_fail_normal: float = 0.3,
                 p_fail_movable: float = 0.01, phys_bits: int = 46, seed: int = 0) -> None:
        if not isinstance(ram, int) or ram <= 0:
            raise ConfigurationError(f"-m: ram size must be a positive number of bytes, not {ram!r}")
        if not isinstance(slots, int) or slots < 0:
            raise ConfigurationError(f"-m: slots must be a non-negative integer, not {slots!r}")
        ram = _round_up(ram, RAM_ROUND)                                 # QEMU: ram rounded to 8 KiB
        if maxmem is None:
            if slots > 0:
                raise ConfigurationError("-m: slots specified but no max-size (maxmem)")
            maxmem = ram
        if maxmem < ram:
            raise ConfigurationError(f"-m: invalid value of maxmem: maximum memory size ({maxmem:#x}) must be "
                                     f"at least the initial memory size ({ram:#x})")
        if slots > 0 and maxmem == ram:
            raise ConfigurationError(f"-m: invalid value of maxmem: memory slots were specified but maximum "
                                     f"memory size ({maxmem:#x}) must be more than initial memory size ({ram:#x})")
        if maxmem % TARGET_PAGE_SIZE:
            raise ConfigurationError(f"-m: maximum memory size must be aligned to multiple of "
                                     f"{TARGET_PAGE_SIZE:#x} (the target page size)")
        if slots > ACPI_MAX_RAM_SLOTS:
            raise ConfigurationError(f"-m: unsupported amount of memory slots: {slots} "
                                     f"(ACPI_MAX_RAM_SLOTS is {ACPI_MAX_RAM_SLOTS})")
        if align <= 0 or align & (align - 1) or align < TARGET_PAGE_SIZE:
            raise ConfigurationError(f"backend alignment {align:#x} is not a power of two >= 4 KiB")
        if kmem and not soft_reserved:
            raise ConfigurationError("kmem needs soft_reserved: dax_kmem onlines device-dax, which only "
                                     "exists for EFI_MEMORY_SP ranges")
        self.below_4g, self.above_4g = q35_ram_split(ram)
        self.boot_mem_end = q35_boot_mem_end(ram)
        self.device_base = _round_up(FOUR_GIB + self.above_4g, GiB)
        self.device_size = (maxmem - ram) + (SLOT_SLACK * slots if enforce_aligned_dimm else 0)
        if self.device_base + self.device_size > 1 << phys_bits:
            raise ConfigurationError(f"-m: unsupported amount of maximum memory: {maxmem:#x} (device memory "
                                     f"ends past the {phys_bits}-bit guest physical address space)")
        self.ram, self.slots, self.maxmem = ram, slots, maxmem
        self.enforce_aligned_dimm = enforce_aligned_dimm
        self.align = align
        self.soft_reserved, self.kmem, self.tag_extension = soft_reserved, kmem, tag_extension
        self.block_size = x86_memory_block_size(self.boot_mem_end)
        self.blocks = MemoryBlocks(self.block_size, auto_online=auto_online, online_policy=online_policy,
                                   p_fail_normal=p_fail_normal, p_fail_movable=p_fail_movable,
                                   max_phys_bits=phys_bits, seed=seed, kernel_bytes=self.ram)
        # Without device memory (maxmem == ram) the window is a token 1 GiB that no add can
        # reach: every add stops at the slot check first (slots == 0 then).
        super().__init__(host, GuestAddressSpace(self.device_base, self.device_size or GiB))
        self._dimms: Dict[uuid.UUID, _Dimm] = {}
        self._next_label = 1
        self.log: List[Dict[str, Any]] = []
        self._refresh()

    # ------------------------------------------------------------------ plug

    def add(self, group: Any, *, slot: Optional[int] = None, addr: Optional[int] = None,
            align: Optional[int] = None) -> Dict[str, Any]:
        """Hot-plug ``group`` (a live :class:`~dcdmap.cxl.TagGroup` of the host) as one DIMM;
        the guest object of the DIMM (``guest_objects`` row).

        ``slot`` / ``addr``: the pc-dimm ``slot=`` and ``addr=`` properties (default: the
        lowest free slot, first-fit placement).  ``align``: the backend's page size (default:
        the presentation's ``align``).  Checks, in QEMU's order: the backend (object_add:
        the group must be live, tagged, dense and not claimed by another DAX device; ``align``
        a power of two and a multiple of 4 KiB), the
        slot, the space (plugged + size <= maxmem - ram), then memory_device_get_free_addr's
        alignment and placement.  Each refusal raises HostError (errno) with QEMU's text and
        changes nothing.  The guest side never refuses the plug: a guest failure (add_memory
        EINVAL, hmem misalignment) is recorded in the DIMM's state, as Linux logs it.
        """
        tag = group.tag
        # object_add memory-backend-file,mem-path=/dev/dax...: the host DAX device of the tag.
        if tag == NULL_UUID:
            raise HostError("an untagged group has no DAX device to name in mem-path (this model presents "
                            "tagged groups only)", E.EINVAL)
        if tag in self._dimms:
            raise HostError(f"memory backend for tag {tag} is busy: already plugged as "
                            f"{self._dimms[tag].id}", E.EBUSY)
        live = self.host.group(tag)                                  # ENOENT if the tag is gone
        if live is not group:
            raise HostError(f"tag {tag}: the group given is not the host's live group", E.ESTALE)
        if group.view is None:
            raise HostError(f"tag {tag}: sequence numbers are not dense (no DAX device)", E.EINVAL)
        if group.dax is not None:
            raise HostError(f"tag {tag}: host DAX device {group.dax.name} is busy", E.EBUSY)
        # The backend's align= (file_ram_alloc): a multiple of the page size and a power of two,
        # checked at object_add whatever the machine type.
        if align is not None and (align <= 0 or align % TARGET_PAGE_SIZE or align & (align - 1)):
            raise HostError(f"backend alignment {align:#x} must be a power of two and a multiple of the "
                            f"page size {TARGET_PAGE_SIZE:#x}", E.EINVAL)
        size = group.size
        # pc_dimm_pre_plug: the slot.
        used_slots = {d.slot for d in self._dimms.values()}
        if self.slots == 0:
            raise HostError("no slots where allocated, please specify the 'slots' option", E.ENOSPC)
        if slot is None:
            slot = next((s for s in range(self.slots) if s not in used_slots), None)
            if slot is None:
                raise HostError("no free slots available", E.ENOSPC)
        elif not 0 <= slot < self.slots:
            raise HostError(f"invalid slot number {slot}, valid range is [0-{self.slots - 1}]", E.EINVAL)
        elif slot in used_slots:
            raise HostError(f"slot {slot} is busy", E.EBUSY)
        # memory_device_pre_plug: the alignment, then memory_device_check_addable: the space.
        if self.enforce_aligned_dimm:
            align = self.align if align is None else align
        else:
            align = TARGET_PAGE_SIZE                                 # legacy_align
        plugged = sum(d.size for d in self._dimms.values())
        if plugged + size > self.maxmem - self.ram:
            raise HostError(f"not enough space, currently {plugged:#x} in use of total space for memory "
                            f"devices {self.maxmem - self.ram:#x}", E.ENOSPC)
        # memory_device_get_free_addr.
        base, end = self.device_base, self.device_base + self.device_size
        if base % align:
            raise HostError(f"the alignment ({align:#x}) is not supported", E.EINVAL)
        if size % align:
            raise HostError(f"backend memory size must be multiple of {align:#x}", E.EINVAL)
        if addr is not None:
            if addr % align:
                raise HostError(f"address must be aligned to {align:#x}", E.EINVAL)
            if not (base <= addr and addr + size <= end):
                raise HostError(f"can't add memory device [{addr:#x}:{size:#x}], usable range for memory "
                                f"devices [{base:#x}:{self.device_size:#x}]", E.EINVAL)
            for d in self._dimms.values():
                if addr < d.gpa + d.size and d.gpa < addr + size:
                    raise HostError(f"address range conflicts with memory device id='{d.id}'", E.EEXIST)
            gpa = addr
        else:
            found = self.gas.find(size, align)                       # first fit, ascending
            if found is None:
                raise HostError("could not find position in guest address space for memory device - memory "
                                "fragmented due to alignments", E.ENOSPC)
            gpa = found
        # Every check passed: commit (object_add, device_add, GPE).
        dax = self.host.create_dax(tag)
        label = self._next_label
        self.gas.map_view(gpa, group.view, label)
        self._next_label += 1
        dimm = _Dimm(label, slot, tag, group, dax, gpa, size, align, bool(group.shareable))
        self._dimms[tag] = dimm
        self.metrics.count("qmp", 2)                                 # object_add + device_add
        self.metrics.count("acpi_notify")                            # GPE.3, insert event
        self._attach(dimm)
        self._note("plug", dimm=dimm.id, slot=slot, gpa=gpa, size=size, tag=str(tag), state=dimm.state)
        self._refresh()
        return self._dimm_row(dimm)

    def _attach(self, d: _Dimm) -> None:
        """What the guest kernel does with a new DIMM range; sets ``d.state``, ``d.usable``,
        ``d.blocks``, ``d.guest_dax``.

        States: ``system-ram`` (ACPI driver, add_memory), ``add_memory failed`` (EINVAL: not
        aligned to the memory block size), ``devdax`` (hmem), ``hmem refused`` (range not
        2 MiB aligned: alloc_dax_region fails), ``kmem`` (devdax onlined as System RAM,
        trimmed to blocks), ``kmem too small`` (nothing left after trimming).
        """
        lo, hi = d.gpa, d.gpa + d.size
        d.blocks, d.guest_dax, d.usable, d.stuck = [], False, (lo, lo), ""
        if not self.soft_reserved:
            try:
                d.blocks = self.blocks.add_memory(lo, d.size, owner=d.id)
            except HostError as err:                    # "acpi PNP0C80: add_memory failed"
                d.state = "add_memory failed"
                self._note("add_memory_failed", dimm=d.id, errno=E.errorcode[err.errno], why=str(err))
                return
            d.state, d.usable = "system-ram", (lo, hi)
            return
        if lo % HMEM_ALIGN or d.size % HMEM_ALIGN:
            d.state = "hmem refused"
            self._note("hmem_refused", dimm=d.id, errno="EINVAL", why="range not aligned to 2 MiB")
            return
        d.guest_dax = True
        if not self.kmem:
            d.state, d.usable = "devdax", (lo, hi)
            return
        klo, khi = _round_up(lo, self.block_size), _round_down(hi, self.block_size)
        if khi <= klo:
            d.state = "kmem too small"
            self._note("kmem_too_small", dimm=d.id, why="too small after alignment", errno="ENOSPC")
            return
        d.blocks = self.blocks.add_memory(klo, khi - klo, owner=d.id)
        d.state, d.usable = "kmem", (klo, khi)

    # ------------------------------------------------------------------ unplug

    def remove(self, tag: Any) -> Removal:
        """``device_del`` of the tag's DIMM: SCI, the guest offlines and removes every memory
        block of the DIMM (all or nothing), _EJ0, DEVICE_DELETED, ``object_del``; the GPA,
        the slot and the host DAX device are freed and ``returned == requested``.  If the
        guest cannot offline a block, it reports _OST: the DIMM stays, ``returned == 0``
        and ``reason`` says why.  HostError ENOENT when no DIMM presents the tag.
        """
        try:
            t = tag if isinstance(tag, uuid.UUID) else uuid.UUID(str(tag))
        except ValueError:
            raise HostError(f"{tag!r} is not a UUID", E.EINVAL) from None
        d = self._dimms.get(t)
        if d is None:
            raise HostError(f"no DIMM presents tag {t}", E.ENOENT)
        self.metrics.count("qmp")                                    # device_del
        self.metrics.count("acpi_notify")                            # GPE.3, remove event
        reason = d.stuck
        if not reason and d.blocks:
            lo, hi = d.blocks[0] * self.block_size, (d.blocks[-1] + 1) * self.block_size
            _, err = self.blocks.offline_and_remove(lo, hi - lo)
            if err is not None:
                reason = f"offline failed: {err} (errno {E.errorcode[err.errno]})"
                if d.state == "kmem":                 # dax_kmem removal is one-shot
                    d.stuck = "dax_kmem: a failed remove_memory keeps the range until reboot"
            else:
                d.blocks = []
        if reason:
            self.metrics.count("acpi_ost")                           # _OST -> ACPI_DEVICE_OST
            self._note("unplug_failed", dimm=d.id, tag=str(t), why=reason)
            self._refresh()
            return Removal(t, 0, d.group.size, "acpi-eject", reason)
        self.gas.release(d.gpa, d.size)
        self.host.destroy_dax(d.dax)
        del self._dimms[t]
        self.metrics.count("qmp")                                    # object_del
        self._note("unplug", dimm=d.id, tag=str(t), gpa=d.gpa, size=d.size)
        self._refresh()
        return Removal(t, d.group.size, d.group.size, "acpi-eject")

    # ------------------------------------------------------------------ what the guest sees

    def _dimm_row(self, d: _Dimm) -> Dict[str, Any]:
        return {"kind": "dimm", "id": d.id, "slot": d.slot, "gpa": d.gpa, "size": d.size,
                "tag": d.tag if self.tag_extension else None, "state": d.state}

    def guest_objects(self) -> List[Dict[str, Any]]:
        """Every object the guest sees, in GPA order within each DIMM: the ``dimm``
        (PNP0C80 device), its ``dax_device`` (hmem devdax; state ``devdax`` or
        ``system-ram`` under kmem) and its ``memory_block`` devices (state ``online`` /
        ``offline``, with ``zone``).  ``tag`` is the tag only with ``tag_extension``."""
        out: List[Dict[str, Any]] = []
        for d in sorted(self._dimms.values(), key=lambda d: d.gpa):
            tag = d.tag if self.tag_extension else None
            out.append(self._dimm_row(d))
            if d.guest_dax:
                out.append({"kind": "dax_device", "gpa": d.gpa, "size": d.size, "tag": tag,
                            "state": "system-ram" if d.state == "kmem" else
                            ("unbound" if d.state == "kmem too small" else "devdax")})
            for i in d.blocks:
                out.append({"kind": "memory_block", "id": f"memory{i}", "gpa": i * self.block_size,
                            "size": self.block_size, "tag": tag, "state": self.blocks.state[i],
                            "zone": self.blocks.zone_of(i)})
        return out

    def dimms(self) -> List[Dict[str, Any]]:
        """The plugged DIMMs (``guest_objects`` rows of kind ``dimm``), in GPA order."""
        return [self._dimm_row(d) for d in sorted(self._dimms.values(), key=lambda d: d.gpa)]

    def _slack(self) -> int:
        """GPA lost to alignment below the highest DIMM: the parts of the gaps between DIMMs
        that no DIMM at the default alignment can use."""
        a = TARGET_PAGE_SIZE if not self.enforce_aligned_dimm else self.align
        pos, slack = self.device_base, 0
        for d in sorted(self._dimms.values(), key=lambda d: d.gpa):
            gap = d.gpa - pos
            if gap > 0:
                slack += gap - max(0, _round_down(d.gpa, a) - _round_up(pos, a))
            pos = d.gpa + d.size
        return slack

    def _refresh(self) -> None:
        """Recompute the derived metrics from the state (control_ops are cumulative)."""
        m = self.metrics
        dimms = list(self._dimms.values())
        slack = self._slack()
        usable = sum(hi - lo for lo, hi in (d.usable for d in dimms))
        m.gpa_used = sum(d.size for d in dimms) + slack
        m.presented = usable
        m.gpa_wasted = m.gpa_used - usable
        counts: Dict[str, int] = {"dimm": 0, "dax_device": 0, "memory_block": 0}
        for o in self.guest_objects():
            counts[o["kind"]] += 1
        m.objects = counts
        m.removal = BEST_EFFORT
        risks = ["the guest must process the ACPI eject request (device_del is a request)"]
        if not self.soft_reserved or self.kmem:
            risks.append("offlining can fail (EBUSY): unmovable or pinned pages, most in ZONE_NORMAL")
        if self.kmem:
            risks.append("dax_kmem removal is one-shot: a failed remove keeps the range until reboot")
        if self.soft_reserved and not self.kmem:
            risks.append("a process may still map the device-dax; the eject does not revoke it")
        m.removal_risks = tuple(risks)
        m.tag_discoverable = self.tag_extension
        m.shared_out_of_ram = self.soft_reserved and not self.kmem

    def _note(self, event: str, **kw: Any) -> None:
        self.log.append({"event": event, **kw})

    # ------------------------------------------------------------------ lifecycle corner cases (RFC §1.8)

    def _ops_delta(self, before: Dict[str, int]) -> Dict[str, int]:
        now = self.metrics.control_ops
        return {k: now[k] - before.get(k, 0) for k in now if now[k] != before.get(k, 0)}

    def _remove_all(self) -> Tuple[int, int, List[Removal]]:
        rs = [self.remove(t) for t in [d.tag for d in sorted(self._dimms.values(), key=lambda d: d.gpa)]]
        return sum(r.returned for r in rs), sum(r.requested - r.returned for r in rs), rs

    def migrate(self, policy: str = "drain") -> Lifecycle:
        """Live migration (RFC §1.8: remove everything first, or pre-populate the destination).

        ``drain``: unplug every DIMM (as ``remove``); feasible when all came back; a DIMM
        that stays blocks the migration (its backend names a DAX device of this host).
        ``prepopulate``: nothing changes here; the destination is assumed to hold the same
        tags and is started with the same ``-m`` and the DIMMs cold-plugged at the same slots
        and addresses (2 QMP/command-line objects each, no GPE).  Non-shareable contents are
        copied (``copied``); shareable ones are the same memory on the destination and
        are skipped (QEMU's ``x-ignore-shared`` capability; UNCONFIRMED for device-dax).
        A :class:`~dcdmap.present.base.Lifecycle`; ``details["removals"]``: the drain's
        :class:`Removal` list.
        """
        before = dict(self.metrics.control_ops)
        if policy == "drain":
            drained, stuck, rs = self._remove_all()
            return Lifecycle("migrate", policy, stuck == 0, returned=drained, stuck=stuck, copied=0,
                             control_ops=self._ops_delta(before),
                             note="every DIMM unplugged before migration" if not stuck else
                                  "a DIMM the guest would not release blocks migration",
                             details={"removals": rs})
        if policy == "prepopulate":
            dimms = list(self._dimms.values())
            copied = sum(d.size for d in dimms if not d.shareable)
            return Lifecycle("migrate", policy, True, returned=0, stuck=0, copied=copied,
                             control_ops={"dest_qmp": 2 * len(dimms)},
                             note="destination pre-populated with the same tags, DIMMs cold-plugged at the "
                                  "same slots and addresses; shareable contents not copied",
                             details={"removals": []})
        raise ConfigurationError(f"migrate policy must be 'drain' or 'prepopulate', not {policy!r}")

    def kexec(self, policy: str = "release") -> Lifecycle:
        """kexec of the guest kernel (RFC §1.8: "as on the host: probably give all capacity back").

        ``release``: unplug every DIMM before the jump (as ``remove``); feasible when all came
        back.  ``keep``: the DIMMs stay plugged; the new kernel re-enumerates the PNP0C80
        devices and rebuilds its view from scratch (memory blocks re-added and auto-onlined
        again, device-dax re-created; a stuck kmem range is released by the reboot).  The
        contents of DIMMs used as System RAM are not preserved (driver-managed kmem ranges
        are left out of the kexec memory map; ACPI-added System RAM is the new kernel's to
        use); device-dax contents are (``kept``; ``details["bytes_kept"]``: the bytes of the
        DIMMs that stay plugged).  ``details["removals"]``: the release's :class:`Removal` list.
        """
        before = dict(self.metrics.control_ops)
        if policy == "release":
            drained, stuck, rs = self._remove_all()
            return Lifecycle("kexec", policy, stuck == 0, returned=drained, stuck=stuck, kept=0,
                             control_ops=self._ops_delta(before), note="all capacity given back before kexec",
                             details={"removals": rs})
        if policy == "keep":
            dimms = sorted(self._dimms.values(), key=lambda d: d.gpa)
            for d in dimms:                          # the old kernel's blocks vanish with it
                self.blocks.forget(d.blocks)
            for d in dimms:
                self._attach(d)
            self._refresh()
            kept = sum(d.group.size for d in dimms)
            preserved = sum(d.group.size for d in dimms if d.state == "devdax")
            return Lifecycle("kexec", policy, True, returned=0, stuck=0, kept=kept, control_ops={},
                             note="DIMMs stay plugged; the new kernel re-enumerates them at boot",
                             details={"bytes_contents_preserved": preserved, "removals": []})
        raise ConfigurationError(f"kexec policy must be 'release' or 'keep', not {policy!r}")

    def kdump(self, policy: str = "keep") -> Lifecycle:
        """A crash and kdump (RFC §1.8 leaves it open: David's "kdump?").  Nothing changes.

        ``keep``: the crash kernel runs from crashkernel memory and leaves the DIMMs alone;
        ACPI-added System RAM is in the dump (``copied``); kmem ranges (driver
        managed, excluded from kexec maps) and device-dax are not.  Feasible.
        ``release``: not feasible from the crash kernel: it does not own the old kernel's
        memory blocks and cannot complete an eject; capacity comes back only through
        ``remove`` after the reboot (the DIMMs survive a VM reset).  ``details["bytes_not_dumpable"]``:
        the DIMM bytes left out of the dump.
        """
        dimms = list(self._dimms.values())
        dumpable = sum(hi - lo for lo, hi in (d.usable for d in dimms if d.state == "system-ram"))
        details = {"bytes_not_dumpable": sum(d.size for d in dimms) - dumpable}
        if policy == "keep":
            return Lifecycle("kdump", policy, True, returned=0, kept=sum(d.size for d in dimms),
                             copied=dumpable, control_ops={},
                             note="DIMMs untouched by the crash kernel", details=details)
        if policy == "release":
            return Lifecycle("kdump", policy, False, returned=0, kept=sum(d.size for d in dimms),
                             copied=dumpable, control_ops={},
                             note="the crash kernel cannot offline the old kernel's blocks; release after reboot",
                             details=details)
        raise ConfigurationError(f"kdump policy must be 'keep' or 'release', not {policy!r}")
