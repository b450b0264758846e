"""Presenting tagged capacity through an emulated CXL Type 3 DCD (rfc-and-users.md §1.6 option 3,
§1.7 "the emulated Type 3 simplification"; presentations.md §3; cxl-dcd.md §4).

The VMM side follows the RFC's simplification list:

* one emulated device per host CFMW (one here), behind its own host bridge (``pxb-cxl``, a
  pass-through expander bridge) and root port (``cxl-rp``);
* one CFMW placed as QEMU places it on x86 (:func:`x86_cfmw`): after the device-memory
  region (DIMMs, virtio-mem) and the 1 MiB CXL host-register region, rounded up to 256 MiB;
  its size a multiple of 256 MiB; one target, so no interleave (ways 1, granularity 256 B);
* one committed, locked HDM decoder (:class:`HdmDecoder`): GPA = window base + guest DPA;
* one extent per DAX region: each host tag group becomes ONE guest extent, contiguous in
  guest DPA (and so in GPA) although its host extents are scattered; the guest extent
  occupies a slot rounded up to ``slot_align`` ("burning" GPA so that freed slots are
  aligned holes and the guest DPA space does not fragment); the burned bytes count as
  ``gpa_wasted``.

The guest side reuses the protocol model unchanged (R8, no guest kernel changes): the
emulated device is a :class:`~dcdmap.cxl.Device` with one head and one DC region the size
of the window, and the guest kernel is a :class:`~dcdmap.cxl.Host` on it with
``hpa_base`` = the window base.  Offers go through the Linux rules of cxl-dcd.md §4.1
(e.g. a tag already live in the guest is refused, EEXIST), releases through §4.4 (deferred
while the DAX device exists), and the guest finds its DAX device by tag (R1).

The GPA map (``gas.map``, GPA -> host HPA) maps each guest extent piecewise through the
host group's view (label = guest extent id), so ``translate_many(GPA)`` lands on the host
DPA of the same logical byte::

    guest offset o --(guest HDM: window base + DPA)--> GPA --(gas.map)--> host HPA
                   --(Host.media_map)--> host DPA  ==  host view.translate(o) -> media

Removal is GUARANTEED: a DAX device not in use is destroyed by the guest agent and the
release re-issued; one in use gets a Forced Capacity Release as the last resort (the guest
loses access; see :meth:`Type3Presentation.remove`).  Choices where the reference is silent
or UNCONFIRMED are listed in the Type 3 section of docs/presentations.md.

    >>> import uuid
    >>> from dcdmap.cxl import Device, Region, Host
    >>> dev = Device([Region(base=0, length=4 << 30, shareable=True)], seed=1)
    >>> host = Host(dev)
    >>> tag = uuid.UUID(int=1)
    >>> _ = dev.add_capacity(0, 0, policy="free", length=100 << 20, tag=tag); host.poll()
    >>> vm = Type3Presentation(host, above_4g_mem_size=4 << 30, slot_align=256 << 20)
    >>> hex(vm.cfmw.base), vm.cfmw.size >> 30, vm.cfmw.ways
    ('0x210000000', 4, 1)
    >>> ext = vm.add(host.group(tag))
    >>> hex(ext.gpa), ext.length >> 20, ext.burned >> 20, vm.guest.dax_devices[0].uuid == tag
    ('0x210000000', 100, 156, True)
    >>> hpa, dpa = vm.translate(ext.gpa + (64 << 20))
    >>> dpa == host.media_map().translate(host.group(tag).view.translate(64 << 20))
    True
    >>> vm.metrics.gpa_used >> 20, vm.metrics.gpa_wasted >> 20, vm.metrics.control_ops
    (256, 156, {'mailbox': 3, 'qmp': 1, 'event': 1})
    >>> r = vm.remove(tag)
    >>> r.how, r.complete, vm.metrics.gpa_used
    ('release', True, 0)
"""
from __future__ import annotations

import errno as E
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..cxl.device import Device
from ..cxl.host import PMD_SIZE, Host, TagGroup
from ..cxl.records import NULL_UUID
from ..cxl.regions import Region
from ..errors import ConfigurationError, HostError
from .base import GUARANTEED, GuestAddressSpace, Lifecycle, Presentation, Removal

__all__ = ["Type3Presentation", "Cfmw", "HdmDecoder", "GuestExtent", "x86_cfmw", "CFMW_ALIGN",
           "HOST_REG_SIZE", "GRANULARITIES"]

MiB, GiB = 1 << 20, 1 << 30
CFMW_ALIGN = 256 * MiB            # window base alignment and size unit; HDM decoder unit
HOST_REG_SIZE = 1 * MiB           # the CXL host-register region QEMU places before the windows
DEVICE_MEMORY_ALIGN = 1 * GiB     # device-memory region base alignment (x86)
GRANULARITIES = (256, 512, 1024, 2048, 4096, 8192, 16384)   # CFMWS encodings 0..6
CFMWS_RESTRICTIONS = 0x0F         # Type2 | Type3 | Volatile | Persistent (QEMU hw/acpi/cxl.c)

# Guest device log operations, by control-op kind (Metrics.control_ops).
_MAILBOX_OPS = frozenset({"get_dc_config", "get_extent_list", "add_response", "release", "mailbox"})
_QMP_OPS = frozenset({"add_capacity", "release_capacity"})


def _round_up(x: int, a: int) -> int:
    return -(-x // a) * a


def _pow2(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0 and not x & (x - 1)


@dataclass(frozen=True)
class Cfmw:
    """One CXL Fixed Memory Window as the CEDT CFMWS entry describes it: ``[base, base +
    size)`` routed to ``targets`` (host bridge UIDs) at ``granularity`` bytes.  With one
    target there is no interleave (ways 1)."""

    base: int
    size: int
    targets: Tuple[int, ...] = (0,)
    granularity: int = 256
    restrictions: int = CFMWS_RESTRICTIONS

    @property
    def end(self) -> int:
        return self.base + self.size

    @property
    def ways(self) -> int:
        return len(self.targets)

    @property
    def encoded_granularity(self) -> int:
        """The CFMWS encoding: granularity = 2 ** (enc + 8)."""
        return self.granularity.bit_length() - 9


def x86_cfmw(window_size: int, *, above_4g_mem_size: int = 0, device_memory_size: int = 0,
             above_4g_mem_start: int = 4 * GiB, granularity: int = 256, host_bridge: int = 0
             ) -> Tuple[Cfmw, int]:
    """Where QEMU's x86 machine puts the first CFMW (presentations.md §3, pc_memory_init):
    (the window, the base of the 1 MiB host-register region).

    The device-memory region (DIMMs, virtio-mem; ``device_memory_size`` bytes, i.e. maxmem -
    ram + 1 GiB per slot, 0 = none) starts at ROUND_UP(end of above-4G RAM, 1 GiB); the
    host-register region follows it (or the above-4G RAM when there is none); the window
    starts at ROUND_UP(host-register base + 1 MiB, 256 MiB).  ConfigurationError unless the
    size is a positive multiple of 256 MiB and the granularity one of 256 B .. 16 KiB.

    >>> w, reg = x86_cfmw(1 << 30, above_4g_mem_size=2560 << 20, device_memory_size=3 << 30)
    >>> hex(reg), hex(w.base), w.ways, w.encoded_granularity       # 6.5 GiB -> 7 GiB + 3 GiB
    ('0x280000000', '0x290000000', 1, 0)
    >>> x86_cfmw(100 << 20)
    Traceback (most recent call last):
    ...
    dcdmap.errors.ConfigurationError: CFMW size 0x6400000 is not a positive multiple of 256 MiB
    """
    if not isinstance(window_size, int) or window_size <= 0 or window_size % CFMW_ALIGN:
        raise ConfigurationError(f"CFMW size {window_size:#x} is not a positive multiple of 256 MiB")
    if granularity not in GRANULARITIES:
        raise ConfigurationError(f"interleave granularity {granularity} is not one of {GRANULARITIES}")
    if above_4g_mem_size < 0 or device_memory_size < 0:
        raise ConfigurationError("memory sizes must not be negative")
    reg = above_4g_mem_start + above_4g_mem_size
    if device_memory_size:
        reg = _round_up(reg, DEVICE_MEMORY_ALIGN) + device_memory_size
    base = _round_up(reg + HOST_REG_SIZE, CFMW_ALIGN)
    if base + window_size > 1 << 64:
        raise ConfigurationError("the CFMW ends past 2**64")
    return Cfmw(base, window_size, (host_bridge,), granularity), reg


@dataclass(frozen=True)
class HdmDecoder:
    """The endpoint HDM decoder: HPA ``[hpa_base, +size)`` -> DPA from ``dpa_base``, one way,
    committed and locked before the guest sees it (§1.7; Linux copes with BIOS-locked
    decoders).  Base and size in 256 MiB units."""

    hpa_base: int
    size: int
    dpa_base: int = 0
    ways: int = 1
    granularity: int = 256
    committed: bool = True
    locked: bool = True

    def __post_init__(self) -> None:
        if self.hpa_base % CFMW_ALIGN or self.size <= 0 or self.size % CFMW_ALIGN:
            raise ConfigurationError("HDM decoder base and size must be in 256 MiB units")
        if self.ways != 1:
            raise ConfigurationError("the emulated device never presents interleave: ways must be 1")
        if self.granularity not in GRANULARITIES:
            raise ConfigurationError(f"interleave granularity {self.granularity} is not one of {GRANULARITIES}")

    def to_dpa(self, hpa: int) -> int:
        """HPA -> DPA (one way: no way bits to drop)."""
        if not self.hpa_base <= hpa < self.hpa_base + self.size:
            raise HostError(f"HPA {hpa:#x} is not decoded (MEMTX_ERROR)", E.ENXIO)
        return hpa - self.hpa_base + self.dpa_base

    def to_hpa(self, dpa: int) -> int:
        if not self.dpa_base <= dpa < self.dpa_base + self.size:
            raise HostError(f"DPA {dpa:#x} is not decoded", E.ENXIO)
        return dpa - self.dpa_base + self.hpa_base


@dataclass(frozen=True)
class GuestExtent:
    """One presented tag group: the single guest extent (``dpa``/``gpa``, ``length`` = the
    host group's size) and its burned tail (``slot - length`` bytes reserved after it)."""

    id: int
    tag: uuid.UUID
    gpa: int
    dpa: int
    length: int
    slot: int
    shareable: bool

    @property
    def burned(self) -> int:
        return self.slot - self.length


class Type3Presentation(Presentation):
    """An emulated CXL Type 3 DCD in the VM (see the module docstring).

    Parameters
    ----------
    host : the host (:class:`~dcdmap.cxl.Host`) whose tag groups are presented.
    window_size : the CFMW size, a multiple of 256 MiB (default: the host's DC partition
        length rounded up to 256 MiB).  It bounds what can be presented, burn included.
    above_4g_mem_size, device_memory_size, above_4g_mem_start : the guest memory layout
        that places the window (:func:`x86_cfmw`).
    block_size : the emulated DC region's block size, a power of two in 2 MiB .. 256 MiB
        (2 MiB = the guest's PMD alignment gate).  A group's size must be a multiple of it.
    slot_align : each guest extent's slot is rounded up to, and aligned at, this power of
        two >= ``block_size`` (default: ``block_size``, nothing burned).
    shareable : the DSMAS shareability of the emulated region (default: the host partition's),
        which the guest uses for every group (§4.1 step 3); a group of the other kind is
        refused (EINVAL).
    seed : the emulated device's seed.

    Thread safety: none; one thread drives a presentation.
    """

    name = "type3"

    def __init__(self, host: Host, *, window_size: Optional[int] = None, above_4g_mem_size: int = 0,
                 device_memory_size: int = 0, above_4g_mem_start: int = 4 * GiB, block_size: int = PMD_SIZE,
                 slot_align: Optional[int] = None, shareable: Optional[bool] = None, seed: int = 0) -> None:
        if window_size is None:
            window_size = _round_up(host.partitions[0].length, CFMW_ALIGN)
        if not _pow2(block_size) or not PMD_SIZE <= block_size <= CFMW_ALIGN:
            raise ConfigurationError(f"block size {block_size:#x} must be a power of two in 2 MiB .. 256 MiB")
        slot_align = block_size if slot_align is None else slot_align
        if not _pow2(slot_align) or slot_align < block_size:
            raise ConfigurationError(f"slot_align {slot_align:#x} must be a power of two >= the block size")
        self.cfmw, self.host_reg_base = x86_cfmw(window_size, above_4g_mem_size=above_4g_mem_size,
                                                 device_memory_size=device_memory_size,
                                                 above_4g_mem_start=above_4g_mem_start)
        super().__init__(host, GuestAddressSpace(self.cfmw.base, self.cfmw.size))
        self.decoder = HdmDecoder(self.cfmw.base, self.cfmw.size)
        self.block_size, self.slot_align = block_size, slot_align
        self.shareable = host.partitions[0].shareable if shareable is None else bool(shareable)
        # The VMM's emulated topology (§1.7): CFMW -> pass-through host bridge -> RP -> endpoint.
        self.topology = {"cfmw": 0, "host_bridge": "pxb-cxl.0", "host_bridge_uid": self.cfmw.targets[0],
                         "hb_passthrough": True, "root_port": "cxl-rp.0", "endpoint": "cxl-type3.0",
                         "decoders": "committed, locked", "interleave_ways": 1}
        self.dev = Device([Region(base=0, length=window_size, block_size=block_size, shareable=self.shareable)],
                          heads=1, seed=seed)
        self.guest = Host(self.dev, hpa_base=self.cfmw.base)       # boot: Get DC Config + extent scan
        self._extents: Dict[uuid.UUID, GuestExtent] = {}
        self._in_use: set = set()
        self._next_id = 1
        self._cursor = 0
        m = self.metrics
        m.removal = GUARANTEED
        m.removal_risks = ("forced release of a DAX device in use: the guest application loses access "
                           "(SIGBUS / poison)",
                           "K11 guests log and ignore Forced Capacity Release (cxl-dcd.md §4.4)")
        m.tag_discoverable = True          # R1: the guest claims its DAX device by tag
        m.shared_out_of_ram = True         # R3: devdax only, never onlined as System RAM
        self._refresh()

    # ------------------------------------------------------------------ bookkeeping

    def _account(self) -> None:
        """Count control operations from the emulated device's log: QMP commands of the VMM,
        mailbox commands of the guest, DC event records delivered."""
        log = self.dev.log
        for entry in log[self._cursor:]:
            op = entry.get("op")
            if op in _MAILBOX_OPS:
                self.metrics.count("mailbox")
            elif op in _QMP_OPS:
                self.metrics.count("qmp")
            elif op == "take_events" and entry.get("count"):
                self.metrics.count("event", entry["count"])
        self._cursor = len(log)

    def _refresh(self) -> None:
        self._account()
        m = self.metrics
        region = int(self.guest.decoder is not None)
        m.objects = {"cxl_device": 1, "cxl_region": region, "dax_region": region,
                     "dax_device": len(self.guest.dax_devices), "extent": len(self.dev.accepted(0))}
        m.presented = sum(x.length for x in self._extents.values())
        m.gpa_used = self.gas.used
        m.gpa_wasted = sum(x.burned for x in self._extents.values())

    def _guest_group(self, tag: uuid.UUID) -> Optional[TagGroup]:
        try:
            return self.guest.group(tag)
        except HostError:
            return None

    def _guest_errno(self, since: int, default: int) -> Tuple[int, str]:
        """The errno and rule of the guest's last refusal logged after ``since``."""
        for entry in reversed(self.guest.log[since:]):
            if entry["event"] in ("group_refused", "extent_refused"):
                return getattr(E, entry["errno"], default), entry["rule"]
        return default, "the emulated device refused the Add-Response"

    def _poll(self) -> None:
        self.guest.poll()

    # ------------------------------------------------------------------ add

    def add(self, group: TagGroup) -> GuestExtent:
        """Present a host tag group as ONE guest extent with the group's tag, then let the
        guest create its DAX device by tag (R1).

        The slot (the group's size rounded up to ``slot_align``) is placed first fit at
        ``slot_align`` in the window; its GPA range maps piecewise through the group's view;
        the burned tail is reserved.  The VMM then offers the extent (QMP add, prescriptive)
        and the guest runs the §4.1 pipeline.  Errors, each leaving the state unchanged (the
        control operations already issued stay counted):

        * HostError ENOENT: the group is not the host's live group for its tag; EINVAL: it
          is untagged, its view is not dense, its size is not a multiple of the block size,
          or its shareability differs from the emulated region's;
        * HostError ENOSPC: not enough window, or the emulated device's extent limit would
          refuse the Add-Response (nothing issued);
        * HostError with the guest's errno when the guest refuses the offer (EEXIST: the
          tag is already live in the guest, §4.1 4a).
        """
        tag = group.tag
        if tag == NULL_UUID:
            raise HostError("an untagged group cannot be found by tag in the guest (R1)", E.EINVAL)
        if self._host_group(tag) is not group:
            raise HostError(f"tag {tag} is not a live group of the host", E.ENOENT)
        if group.view is None:
            raise HostError(f"tag {tag}: sequence numbers are not dense", E.EINVAL)
        size = group.size
        if size % self.block_size:
            raise HostError(f"tag {tag}: size {size:#x} is not a multiple of the emulated block size "
                            f"{self.block_size:#x}", E.EINVAL)
        if group.shareable != self.shareable:
            raise HostError(f"tag {tag}: a {'shareable' if group.shareable else 'non-shareable'} group on an "
                            f"emulated region that is not", E.EINVAL)
        slot = _round_up(size, self.slot_align)
        gpa = self.gas.find(slot, self.slot_align)
        if gpa is None:
            raise HostError(f"not enough window for {slot:#x} bytes at alignment {self.slot_align:#x}", E.ENOSPC)
        # The Add-Response of one extent fails (RESOURCES_EXHAUSTED) when 1 + tracked (accepted +
        # pending, the new offer included) exceeds the device's limit (cxl-dcd.md §5.3), and the
        # refused offer would stay pending: refuse it here, with that condition, issuing nothing.
        tracked = len(self.dev.accepted(0)) + sum(len(o.extents) for o in self.dev.pending_offers(0))
        if 1 + tracked + 1 > self.dev.max_extents:
            raise HostError(f"the emulated device tracks {tracked} extents; an Add-Response of one more "
                            f"exceeds its limit of {self.dev.max_extents}", E.ENOSPC)
        dpa = self.decoder.to_dpa(gpa)
        xid = self._next_id
        self.gas.map_view(gpa, group.view, xid)
        if slot > size:
            self.gas.reserve(gpa + size, slot - size, xid)
        mark = len(self.guest.log)
        try:
            self.dev.add_capacity(0, 0, [(dpa, size)], tag=tag)            # QMP: one extent
            self._poll()                                                    # event -> §4.1 -> Add-Response
            g = self._guest_group(tag)
            if g is None or len(g.extents) != 1 or int(g.extents["start"][0]) != dpa:
                err, rule = self._guest_errno(mark, E.ENOSPC)
                raise HostError(f"the guest refused tag {tag}: {rule}", err)
        except Exception:
            self.gas.release(gpa, slot)
            self._refresh()
            raise
        self.guest.create_dax(tag)                                          # userspace: uuid = tag
        self._next_id += 1
        ext = GuestExtent(xid, tag, gpa, dpa, size, slot, g.shareable)
        self._extents[tag] = ext
        self._refresh()
        return ext

    def _host_group(self, tag: uuid.UUID) -> Optional[TagGroup]:
        try:
            return self.host.group(tag)
        except HostError:
            return None

    # ------------------------------------------------------------------ in-use marks

    def set_in_use(self, tag: Any, in_use: bool = True) -> None:
        """Mark the guest DAX device of ``tag`` as mapped by an application (or no longer).
        HostError ENODEV when the guest has no DAX device claiming the tag (e.g. after
        ``kdump("keep")``): there is nothing to map."""
        ext = self._extent(tag)
        if in_use:
            g = self._guest_group(ext.tag)
            if g is None or g.dax is None:
                raise HostError(f"tag {ext.tag}: the guest has no DAX device to map", E.ENODEV)
        (self._in_use.add if in_use else self._in_use.discard)(ext.tag)

    def in_use(self, tag: Any) -> bool:
        return self._extent(tag).tag in self._in_use

    def _extent(self, tag: Any) -> GuestExtent:
        try:
            t = tag if isinstance(tag, uuid.UUID) else uuid.UUID(str(tag))
        except ValueError:
            raise HostError(f"{tag!r} is not a UUID", E.EINVAL) from None
        try:
            return self._extents[t]
        except KeyError:
            raise HostError(f"tag {t} is not presented", E.ENOENT) from None

    # ------------------------------------------------------------------ remove

    def remove(self, tag: Any, *, force: bool = True) -> Removal:
        """Take a presented group back; the GPA slot (burn included) is freed.

        * DAX device not in use: the guest agent destroys it (daxctl, resize 0), then the VMM
          asks for a tag-based release; the guest releases the whole group (§4.4): one
          Release DC.  ``how="release"``.
        * In use: the VMM asks; the guest defers (§4.4, EBUSY).  With ``force`` (default) the
          VMM issues a Forced Capacity Release as the last resort: the device drops the
          extent at once and the guest loses access; ``how="forced"``.  Without ``force``
          nothing changes and ``how="deferred"``, 0 bytes returned.

        A K11 guest logs and ignores the forced release (§4.4); the model then drops the
        guest's stale group and DAX device, as the guest would once its application faulted
        and the device was destroyed, so that the guest stays consistent with the device.
        HostError ENOENT if the tag is not presented.
        """
        ext = self._extent(tag)
        t = ext.tag
        g = self._guest_group(t)
        how, reason = "release", ""
        if t not in self._in_use or g is None or g.dax is None:             # no DAX device: nothing defers
            if g is not None and g.dax is not None:
                self.guest.destroy_dax(g.dax)
            self.dev.release_capacity(0, 0, policy="tag-based", tag=t)
            self._poll()
        else:
            self.dev.release_capacity(0, 0, policy="tag-based", tag=t)
            self._poll()                                              # deferred: DAX device busy
            if not force:
                self._refresh()
                return Removal(t, 0, ext.length, "deferred",
                               "the guest DAX device is in use: release deferred (§4.4 EBUSY)")
            self._force(t)
            how, reason = "forced", "the guest DAX device was in use: forced release, the guest lost access"
        if self._guest_group(t) is not None:                          # the guest did not let go
            self._force(t)
            how, reason = "forced", "the guest did not release: forced release"
        self.gas.release(ext.gpa, ext.slot)
        del self._extents[t]
        self._in_use.discard(t)
        self._refresh()
        return Removal(t, ext.length, ext.length, how, reason)

    def _force(self, t: uuid.UUID) -> None:
        """Forced Capacity Release of every guest extent of tag ``t``, and the guest-side drop."""
        self.dev.release_capacity(0, 0, policy="tag-based", tag=t, forced=True)
        self._poll()                                                  # logged and ignored (K11)
        g = self._guest_group(t)
        if g is not None:
            if g.dax is not None:
                self.guest.destroy_dax(g.dax)
            self.guest.lose(t, "type3 model: the guest lost access to force-released capacity")

    # ------------------------------------------------------------------ views

    def guest_objects(self) -> List[Dict[str, Any]]:
        """What the guest sees: the device and region, then one entry per presented DAX region
        (its extent, GPA, DAX device name, tag), in GPA order."""
        out: List[Dict[str, Any]] = [
            {"kind": "cxl_device", "name": self.topology["endpoint"], "window": (self.cfmw.base, self.cfmw.size)},
            {"kind": "cxl_region", "decoder": self.guest.decoder, "hpa_base": self.guest.hpa_base},
        ]
        for x in sorted(self._extents.values(), key=lambda x: x.gpa):
            g = self._guest_group(x.tag)
            out.append({"kind": "dax_device", "name": g.dax.name if g is not None and g.dax else None,
                        "tag": x.tag, "extent": x.id, "gpa": x.gpa, "dpa": x.dpa, "size": x.length,
                        "burned": x.burned, "in_use": x.tag in self._in_use})
        return out

    @property
    def extents(self) -> List[GuestExtent]:
        """The presented guest extents, in GPA order."""
        return sorted(self._extents.values(), key=lambda x: x.gpa)

    def check_invariants(self) -> None:
        """AssertionError unless the model is consistent: the emulated device's invariants;
        the guest's extents = the device's accepted extents = one per presented group; each
        guest group's HPA is window base + DPA; the GPA map and burn cover exactly the slots."""
        self.dev.check_invariants()
        acc = self.dev.accepted(0)
        dev_ext = np.stack([acc["start"], acc["length"]], axis=1) if len(acc) else np.zeros((0, 2), np.uint64)
        assert np.array_equal(self.guest.extents(), dev_ext), "guest extents differ from the device's"
        want = sorted((x.dpa, x.length) for x in self._extents.values())
        assert [tuple(map(int, r)) for r in dev_ext] == want, "device extents differ from the presented groups"
        for x in self._extents.values():
            g = self.guest.group(x.tag)
            assert int(g.hpa[0]) == x.gpa == self.decoder.to_hpa(x.dpa), "GPA != window base + DPA"
        assert self.gas.used == sum(x.slot for x in self._extents.values()), "GPA use differs from the slots"

    # ------------------------------------------------------------------ lifecycle (§1.8)

    def _snapshot(self) -> Dict[str, int]:
        return dict(self.metrics.control_ops)

    def _delta(self, before: Dict[str, int]) -> Dict[str, int]:
        return {k: v - before.get(k, 0) for k, v in self.metrics.control_ops.items() if v != before.get(k, 0)}

    def migrate(self, policy: str = "drain") -> Lifecycle:
        """Live migration (RFC §1.8): ``drain`` removes every presented group before the
        move (forced where in use; the orchestrator re-offers on the destination), so the
        state changes; ``prepopulate`` leaves it unchanged and reports what the destination
        VMM must set up: the same extents already accepted in its emulated device (one QMP
        command each, no event, no mailbox: the guest sees no change), which needs the
        destination host to hold the same tags first.

        A :class:`~dcdmap.present.base.Lifecycle`.  ``drain``: ``returned`` the bytes
        removed, ``kept`` what is still presented after (0), ``stuck`` 0 (forced release
        guarantees the return), ``control_ops`` the delta; ``details``: ``presented_before``,
        ``forced`` (removals that had to be forced), ``gpa_used``.  ``prepopulate``: ``kept``
        the bytes presented, ``control_ops`` the destination's work (``qmp``, ``event``,
        ``mailbox``); ``details``: ``extents``, ``gpa_used``, ``guest_visible`` (False),
        ``requires``.  ``copied`` is 0 for both: the model counts no content copy."""
        if policy == "drain":
            before, presented = self._snapshot(), self.metrics.presented
            removals = [self.remove(t) for t in list(self._extents)]
            forced = sum(r.how == "forced" for r in removals)
            stuck = sum(r.requested - r.returned for r in removals)      # 0: forced release guarantees it
            return Lifecycle("migrate", policy, stuck == 0, returned=sum(r.returned for r in removals),
                             kept=self.metrics.presented, stuck=stuck, control_ops=self._delta(before),
                             note=f"every group removed before the move ({forced} forced; stuck is 0 because "
                                  f"forced release guarantees the return); re-offered on the destination",
                             details={"presented_before": presented, "forced": forced,
                                      "gpa_used": self.metrics.gpa_used})
        if policy == "prepopulate":
            n = len(self._extents)
            return Lifecycle("migrate", policy, True, returned=0, kept=self.metrics.presented,
                             control_ops={"qmp": n, "event": 0, "mailbox": 0},
                             note="nothing changes; the destination VMM accepts the same extents up front "
                                  "(one QMP command each, invisible to the guest)",
                             details={"extents": n, "gpa_used": self.metrics.gpa_used, "guest_visible": False,
                                      "requires": "the destination host holds every presented tag before "
                                                  "the switch-over"})
        raise ConfigurationError(f"migrate policy must be 'drain' or 'prepopulate', not {policy!r}")

    def _reboot_guest(self) -> None:
        """A new guest kernel: a new Host on the emulated device (region creation rescans the
        accepted extents, §4.5); applications and their in-use marks are gone."""
        self._in_use.clear()
        self.guest = Host(self.dev, hpa_base=self.cfmw.base)

    def _drop_all_gpa(self) -> None:
        for x in self._extents.values():
            self.gas.release(x.gpa, x.slot)
        self._extents.clear()

    def kexec(self, policy: str = "release") -> Lifecycle:
        """kexec (RFC §1.8: "as on the host, probably give all back").

        ``release`` (default): the old kernel destroys its DAX devices and its region, which
        releases every group (one Release DC per extent); the new kernel finds an empty
        device.  ``keep``: the extents stay accepted; the new kernel's region creation
        recovers them (§4.5, no Add-Response) and userspace re-claims each DAX device by tag.

        A :class:`~dcdmap.present.base.Lifecycle`: ``returned`` and ``kept`` bytes, ``stuck``
        0 (the guest's own release returns everything), ``copied`` 0, ``control_ops`` the
        delta; ``details``: ``presented_before``, ``gpa_used``.
        """
        if policy not in ("release", "keep"):
            raise ConfigurationError(f"kexec policy must be 'release' or 'keep', not {policy!r}")
        before, presented = self._snapshot(), self.metrics.presented
        for dax in self.guest.dax_devices:
            self.guest.destroy_dax(dax)
        if policy == "release":
            self.guest.destroy_region("kexec")
            self._drop_all_gpa()
            self._reboot_guest()
        else:
            self._reboot_guest()
            for t in self._extents:
                self.guest.create_dax(t)
        self._refresh()
        note = ("the old kernel released every group; the new kernel finds an empty device"
                if policy == "release" else
                "extents stay accepted; the new kernel recovers them by rescan and re-claims each DAX device by tag")
        return Lifecycle("kexec", policy, True, returned=presented - self.metrics.presented,
                         kept=self.metrics.presented, stuck=0, copied=0, control_ops=self._delta(before), note=note,
                         details={"presented_before": presented, "gpa_used": self.metrics.gpa_used})

    def kdump(self, policy: str = "keep") -> Lifecycle:
        """kdump (RFC §1.8: open; a policy flag here).

        ``keep`` (default): the VMM changes nothing; the capture kernel's region creation
        recovers the extents (§4.5) but nothing claims a DAX device, and the dump does not
        include the DAX contents (device memory, not System RAM: UNCONFIRMED).  ``release``:
        the crashed kernel cannot answer, so the VMM forces every group back (Forced
        Capacity Release); the capture kernel finds an empty device.

        A :class:`~dcdmap.present.base.Lifecycle`: ``returned`` and ``kept`` bytes, ``stuck``
        0 (forced release guarantees the return), ``copied`` 0 (no DAX bytes in the dump),
        ``control_ops`` the delta; ``details``: ``presented_before``, ``forced`` (groups
        force-released), ``dump_includes_dax`` (False), ``gpa_used``.
        """
        if policy not in ("keep", "release"):
            raise ConfigurationError(f"kdump policy must be 'keep' or 'release', not {policy!r}")
        before, presented = self._snapshot(), self.metrics.presented
        forced = 0
        if policy == "release":
            for t in list(self._extents):
                self.dev.release_capacity(0, 0, policy="tag-based", tag=t, forced=True)
                forced += 1
            self._drop_all_gpa()
        self._reboot_guest()                      # the capture kernel
        self._poll()                              # forced-release records: logged and ignored
        self._refresh()
        note = ("the VMM changes nothing; the capture kernel recovers the extents, claims no DAX device, "
                "and the dump leaves the DAX contents out" if policy == "keep" else
                "the VMM force-releases every group (stuck is 0: forced release guarantees the return); "
                "the capture kernel finds an empty device")
        return Lifecycle("kdump", policy, True, returned=presented - self.metrics.presented,
                         kept=self.metrics.presented, stuck=0, copied=0, control_ops=self._delta(before), note=note,
                         details={"presented_before": presented, "forced": forced, "dump_includes_dax": False,
                                  "gpa_used": self.metrics.gpa_used})
