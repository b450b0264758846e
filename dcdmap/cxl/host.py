"""What a Linux host does with Dynamic Capacity events (reference §4; the DCD v11 series).

A :class:`Host` is attached to one head of a :class:`~dcdmap.cxl.Device`.  It reads the DC
configuration, creates a CXL region over the first DC partition (recovering the extents the
device already lists, §4.5), and then handles the device's events:

* **Add Capacity** records are staged while More is set (at most ``max_pending``, and for at
  most ``add_timeout`` ticks); when a record closes the chain, the staged extents go through
  the pipeline of §4.1: grouped by tag, sorted by sequence number, the group gates (tag
  already live, sequence integrity, one partition, alignment), the per-extent gates (inside
  a partition and the decoder, tag/sequence rules, duplicate vs partial overlap), and one
  Add-Response listing every accepted extent in offer order.
* **Release Capacity** records release the whole tag group an extent belongs to (§4.4),
  deferred while a DAX device uses it, answered with one Release DC per extent otherwise.
* **Forced Capacity Release** is logged and ignored; **Region Configuration Updated** is
  logged as unhandled (K11 12/31).

Each surviving tag group gets a :class:`~dcdmap.TagView` (logical offset -> HPA) built by
the engine, and DAX devices claim groups by tag (:meth:`Host.create_dax`).  Every decision
is written to :attr:`Host.log` with the rule it applies.

    >>> import uuid
    >>> from dcdmap.cxl import Device, Region, Host
    >>> dev = Device([Region(base=0, length=1 << 30)])
    >>> host = Host(dev)
    >>> tag = uuid.UUID(int=1)
    >>> _ = dev.add_capacity(0, 0, [(0, 2 << 20), (8 << 20, 2 << 20)], tag=tag)
    >>> host.poll()
    >>> dax = host.create_dax(tag)
    >>> dax.size, hex(dax.translate(2 << 20) - host.hpa_base)
    (4194304, '0x800000')
"""
from __future__ import annotations

import errno as E
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from .._core import ExtentMap, TagView
from ..errors import ConfigurationError, HostError, SequenceError
from . import records as R
from .device import MAILBOX_PAYLOAD_SIZE, Device
from .records import NULL_UUID, DcEventType, ReturnCode
from .regions import Region, check_regions

__all__ = ["Host", "TagGroup", "DaxDevice", "PMD_SIZE", "MAX_PENDING_EXTENTS", "ADD_TIMEOUT_TICKS",
           "VERSIONS"]

PMD_SIZE = 2 << 20               # x86 PMD: the DAX region alignment (K11 15/31)
MAX_PENDING_EXTENTS = 100        # CXL_DC_MAX_PENDING_EXTENTS
ADD_TIMEOUT_TICKS = 20_000       # CXL_DC_ADD_TIMEOUT, 20 s at the default 1 ms per tick
RESCAN_RETRIES = 10              # Get Extent List rereads when the generation changes
VERSIONS = ("v9", "v10", "v11")
_GRANULE = 64


@dataclass(eq=False)
class TagGroup:
    """All extents a host holds for one tag (an untagged extent is a group of its own).

    ``extents`` is an EXTENT_DTYPE array in ``seq_num`` order with the host's sequence number
    in ``shared_seq``; ``hpa`` the host addresses of the extents, in the same order.
    ``view`` is the contiguous view (logical offset -> HPA), or None when a per-extent gate
    left a hole in the sequence (the group cannot be claimed, §4.1 step 5).
    """

    id: int
    tag: uuid.UUID
    partition: int
    shareable: bool
    extents: np.ndarray
    hpa: np.ndarray
    view: Optional[TagView] = field(repr=False)
    dax: Optional["DaxDevice"] = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return int(self.extents["length"].sum())


@dataclass(eq=False)
class DaxDevice:
    """A DAX device on the DC region, claiming one tag group (§4.3).  Its bytes are the
    group's view: offset o is HPA ``translate(o)``."""

    name: str
    host: "Host" = field(repr=False)
    group: Optional[TagGroup] = field(repr=False)

    @property
    def uuid(self) -> uuid.UUID:
        """The tag read back (the null UUID for an untagged group)."""
        return self.group.tag if self.group else NULL_UUID

    @property
    def size(self) -> int:
        return self.group.size if self.group else 0

    def translate(self, offset: int) -> int:
        """The HPA of byte ``offset`` of the device."""
        return self._view().translate(offset)

    def translate_many(self, offsets: Any) -> np.ndarray:
        """HPAs of many offsets (one C loop)."""
        return self._view().translate_many(offsets)

    def _view(self) -> TagView:
        if self.group is None or self.group.view is None:
            raise HostError(f"{self.name} has size 0", E.ENXIO)
        return self.group.view

    def resize(self, size: int) -> None:
        """Only size 0 (destroy) is allowed on a DC DAX device; anything else is EOPNOTSUPP."""
        if size != 0:
            raise HostError(f"{self.name}: a DC DAX device cannot be resized", E.EOPNOTSUPP)
        self.host.destroy_dax(self)


def _tag_of(raw: Any) -> uuid.UUID:
    return uuid.UUID(bytes=bytes(raw))


class Host:
    """A Linux host (DCD v11 by default) on one head of a device.  See the module docstring.

    Parameters
    ----------
    device, head : the device and the head this host is attached to.
    alignment : the group alignment gate (PMD size, 2 MiB on x86; §4.1 4d).
    max_pending : records staged in one More chain before the chain is dropped.
    add_timeout : ticks an unterminated chain may wait before it is dropped.
    payload_size : mailbox payload bytes; a longer Add-Response is split (More set).
    hpa_base : HPA where the CXL region (its decoder) starts.
    decoder_length : bytes of DPA the endpoint decoder maps from the partition base (default:
        the whole partition).
    version : "v11" (default), "v10" (sequence numbers 1..n, 0 = not shared) or "v9" (tags
        and shared extents refused).
    create_region : create the region (and rescan) at once.
    keep_log : keep every decision in :attr:`log` (default); False keeps none (long runs).

    Thread safety: none; one thread drives a host.
    """

    def __init__(self, device: Device, head: int = 0, *, alignment: int = PMD_SIZE,
                 max_pending: int = MAX_PENDING_EXTENTS, add_timeout: int = ADD_TIMEOUT_TICKS,
                 payload_size: int = MAILBOX_PAYLOAD_SIZE, hpa_base: int = 1 << 40,
                 decoder_length: Optional[int] = None, version: str = "v11",
                 create_region: bool = True, keep_log: bool = True) -> None:
        if version not in VERSIONS:
            raise ConfigurationError(f"version must be one of {VERSIONS}, not {version!r}")
        if alignment <= 0 or alignment & (alignment - 1) or alignment % _GRANULE:
            raise ConfigurationError(f"alignment {alignment:#x} is not a power of two multiple of 64")
        if max_pending < 1 or add_timeout < 0 or payload_size < 32:
            raise ConfigurationError("max_pending >= 1, add_timeout >= 0 and payload_size >= 32 are required")
        self.device = device
        self.head = head
        self.alignment = alignment
        self.max_pending = max_pending
        self.add_timeout = add_timeout
        self.payload_size = payload_size
        self.hpa_base = hpa_base
        self.version = version
        self.log: List[Dict[str, Any]] = []
        self.keep_log = keep_log
        self.partitions = self._read_config(decoder_length)
        self.decoder: Optional[Tuple[int, int]] = None      # (DPA base, length) of the region
        self._decoder_length = decoder_length
        self._extents = ExtentMap(_GRANULE)                  # DPA -> HPA, label = group id
        self._media: Optional[ExtentMap] = None              # its inverse, built on demand
        self._groups: Dict[int, TagGroup] = {}
        self._by_tag: Dict[uuid.UUID, TagGroup] = {}
        self._next_group = 0
        self._daxes: List[DaxDevice] = []
        self._next_dax = 1
        self._staged: List[np.ndarray] = []
        self._staged_count = 0
        self._chain_start: Optional[int] = None
        self._discarding = False
        self.now = 0
        if create_region:
            self.create_region()

    # ------------------------------------------------------------------ configuration

    def _read_config(self, decoder_length: Optional[int]) -> Tuple[Region, ...]:
        """Get DC Configuration, then the validity rules of ``cxl_dc_check`` (§2.2)."""
        out = self.device.get_dc_config(self.head)
        dsmas = self.device.dsmas()
        parts = tuple(Region.from_record(r, shareable=dsmas.get(r.dsmad_handle, (False, False))[0],
                                         read_only=dsmas.get(r.dsmad_handle, (False, False))[1])
                      for r in out.regions)
        check_regions(parts)
        if not parts:
            raise ConfigurationError("the device has no DC partition")
        if decoder_length is not None and not 0 < decoder_length <= parts[0].length:
            raise ConfigurationError(f"decoder_length {decoder_length:#x} must be 1 .. the partition length")
        return parts

    def _note(self, event: str, **kw: Any) -> None:
        if self.keep_log:
            self.log.append({"tick": self.now, "event": event, **kw})

    # ------------------------------------------------------------------ events

    def poll(self, now: Optional[int] = None, limit: Optional[int] = None) -> None:
        """Read up to ``limit`` event records from the device and handle them, at tick ``now``
        (default: the last tick seen), then apply the add timeout."""
        self.tick(now)                     # a chain past its deadline is gone before more arrive
        for ev in self.device.take_events(self.head, limit):
            self.handle_event(ev)

    def tick(self, now: Optional[int] = None) -> None:
        """Advance to ``now`` and drop a chain that has waited ``add_timeout`` ticks (§3.7)."""
        if now is not None:
            self.now = max(self.now, now)
        if self._chain_start is not None and self.now - self._chain_start >= self.add_timeout:
            self._note("add_timeout", rule="§3.7 CXL_DC_ADD_TIMEOUT", dropped=self._staged_count)
            self._drop_chain()

    def handle_event(self, ev: Any) -> None:
        """Handle one DC event record (a DC_EVENT_DTYPE row or a :class:`~dcdmap.cxl.DcEvent`)."""
        if isinstance(ev, R.DcEvent):
            ev = R.records_to_array([ev], R.DcEvent)[0]
        kind = int(ev["event_type"])
        more = bool(ev["flags"] & 1)
        if kind == DcEventType.ADD_CAPACITY:
            self._stage(ev, more)
        elif kind == DcEventType.RELEASE_CAPACITY:
            self._release_event(ev["extent"])
        elif kind == DcEventType.FORCED_CAPACITY_RELEASE:
            e = ev["extent"]
            self._note("forced_release_ignored", rule="§4.4 forced release is logged and ignored",
                       start=int(e["start"]), length=int(e["length"]))
        else:
            self._note("event_unhandled", rule="§4.4 only add and release are handled", type=kind)

    def _stage(self, ev: np.ndarray, more: bool) -> None:
        if self._discarding:                         # the rest of a chain that overflowed
            if not more:
                self._discarding = False
            return
        if self._chain_start is None:
            self._chain_start = self.now
        if self._staged_count >= self.max_pending:
            self._note("chain_overflow", rule="§3.7 CXL_DC_MAX_PENDING_EXTENTS", dropped=self._staged_count + 1)
            self._drop_chain()
            self._discarding = more
            return
        self._staged.append(ev["extent"].copy())
        self._staged_count += 1
        if not more:
            chain = np.array(self._staged, dtype=R.EXTENT_DTYPE)
            self._staged, self._staged_count, self._chain_start = [], 0, None
            self._add_chain(chain, recovered=False)

    def _drop_chain(self) -> None:
        """Forget the staged records and reject the offer with an empty Add-Response."""
        self._staged, self._staged_count, self._chain_start = [], 0, None
        self._respond(np.zeros(0, np.uint64), np.zeros(0, np.uint64))

    # ------------------------------------------------------------------ the add pipeline (§4.1)

    def _partition_of(self, starts: np.ndarray) -> np.ndarray:
        bases = np.array([p.base for p in self.partitions], np.uint64)
        return np.searchsorted(bases, starts, side="right") - 1

    def _add_chain(self, chain: np.ndarray, recovered: bool) -> None:
        """Steps 1–7 of §4.1 on a closed chain; answer with one Add-Response unless recovered."""
        n = len(chain)
        accepted = np.zeros(n, bool)
        # 1. Groups by tag in order of first arrival; each untagged extent is its own group.
        words = np.ascontiguousarray(chain["tag"]).view(np.uint64).reshape(n, 2)
        null = (words == 0).all(axis=1)
        _, first, inverse = np.unique(words, axis=0, return_index=True, return_inverse=True)
        key = np.where(null, np.arange(n), first[inverse.ravel()])
        # 2. Stable sort by sequence number inside each group (lexsort is stable).
        order = np.lexsort((chain["shared_seq"], key))
        cuts = np.flatnonzero(np.diff(key[order])) + 1
        online = []
        for idx in np.split(order, cuts) if n else []:
            ok, group = self._add_group(chain, idx, recovered)
            accepted[idx[ok]] = True
            if group is not None:
                online.append(group)
        if not recovered and not self._respond(chain["start"][accepted], chain["length"][accepted]):
            # The device holds none of it: nothing of the chain may stay online.
            for group in online:
                self._forget(group)
                self._note("group_offline", rule="§4.1 7 the device refused the Add-Response",
                           tag=str(group.tag), group=group.id)

    def _add_group(self, chain: np.ndarray, idx: np.ndarray,
                   recovered: bool) -> Tuple[np.ndarray, Optional[TagGroup]]:
        """Gates and onlining of one tag group: which of its extents were accepted, and the
        group brought online (None if none was)."""
        g = chain[idx]
        tag = _tag_of(g["tag"][0])
        starts, lengths, seqs = g["start"], g["length"], g["shared_seq"].astype(np.int64)
        part = self._partition_of(starts)
        # 3. Shareability from the partition of the first extent.
        shareable = bool(part[0] >= 0 and self.partitions[part[0]].shareable)
        if self.version == "v10":
            shareable = bool(seqs[0] != 0)            # K10: seq 1..n means shared, 0 not shared
        # 4. Group gates: any failure drops the whole group.
        if tag != NULL_UUID and tag in self._by_tag:
            return self._refuse_group(tag, g, "§4.1 4a tag already live", E.EEXIST), None
        if shareable:
            want = np.arange(1, len(g) + 1) if self.version == "v10" else np.arange(len(g))
            if not np.array_equal(seqs, want):
                return self._refuse_group(tag, g, "§4.1 4b sequence numbers are not 0..n-1", E.EINVAL), None
        if tag != NULL_UUID and (part != part[0]).any():
            return self._refuse_group(tag, g, "§4.1 4c extents in more than one partition", E.EINVAL), None
        a = np.uint64(self.alignment)
        if ((starts % a) != 0).any() or ((lengths % a) != 0).any():
            return self._refuse_group(tag, g, f"§4.1 4d start or length not aligned to {self.alignment:#x}",
                                      E.EINVAL), None
        # 5. Per-extent gates: a failure drops that extent only; a duplicate is skipped.
        ok, duplicate = self._extent_gates(g, tag, part, shareable)
        new = ok & ~duplicate
        if not new.any():
            return new, None
        # 6. Host sequence numbers: the device's when shareable, else arrival order.
        host_seq = seqs - (1 if self.version == "v10" and shareable else 0) if shareable \
            else np.arange(len(g), dtype=np.int64)
        # 7. Online the group: every new extent into the map, the view by the engine.
        keep = g[new]
        hpa = self._hpa(keep["start"])
        kept_seq = host_seq[new]
        order = np.argsort(kept_seq, kind="stable")
        keep, hpa, kept_seq = keep[order], hpa[order], kept_seq[order]
        keep = keep.copy()
        keep["shared_seq"] = kept_seq
        try:
            view: Optional[TagView] = TagView(hpa, keep["length"], kept_seq.astype(np.uint64))
        except SequenceError:
            view = None                               # a per-extent gate left a hole
        group = TagGroup(self._next_group, tag, int(part[0]), shareable, keep, hpa, view)
        self._next_group += 1
        self._media = None
        self._extents.insert_many(keep["start"], keep["length"], hpa,
                                  np.full(len(keep), group.id, np.uint32))
        self._groups[group.id] = group
        if tag != NULL_UUID:
            self._by_tag[tag] = group
        self._note("group_online", tag=str(tag), group=group.id, extents=len(keep), size=group.size,
                   recovered=recovered, claimable=view is not None)
        return new, group

    def _refuse_group(self, tag: uuid.UUID, g: np.ndarray, rule: str, err: int) -> np.ndarray:
        self._note("group_refused", tag=str(tag), rule=rule, errno=E.errorcode[err],
                   extents=[[int(s), int(n)] for s, n in zip(g["start"].tolist(), g["length"].tolist())])
        return np.zeros(len(g), bool)

    def _extent_gates(self, g: np.ndarray, tag: uuid.UUID, part: np.ndarray,
                      shareable: bool) -> Tuple[np.ndarray, np.ndarray]:
        """§4.1 step 5 for each extent: (passed, duplicate of an extent already held)."""
        starts, lengths = g["start"], g["length"]
        n = len(g)
        reasons: List[Optional[Tuple[str, int]]] = [None] * n

        def fail(mask: np.ndarray, rule: str, err: int) -> None:
            for i in np.flatnonzero(mask):
                if reasons[i] is None:
                    reasons[i] = (rule, err)

        ends = starts.astype(object) + lengths.astype(object)
        pend = np.array([self.partitions[p].end if p >= 0 else 0 for p in part], dtype=object)
        fail(np.asarray((part < 0) | (lengths == 0) | (ends > pend), bool),
             "§4.1 5 not inside a DC partition", E.ENXIO)
        if self.version == "v9":
            fail(np.full(n, tag != NULL_UUID), "§4.6 K9: tags not supported", E.EINVAL)
            fail(g["shared_seq"] != 0, "§4.6 K9: extent can not be shared", E.EINVAL)
        if shareable and tag == NULL_UUID:
            fail(np.ones(n, bool), "§4.1 5 shareable partition needs a tag", E.EINVAL)
        if not shareable and self.version != "v10":
            fail(g["shared_seq"] != 0, "§4.1 5 sequence number on a non-shareable partition", E.EINVAL)
        if self.decoder is None:
            fail(np.ones(n, bool), "§4.1 5 no CXL region with a DAX region", E.ENXIO)
        else:
            lo, size = self.decoder
            fail((starts < np.uint64(lo)) | (ends > lo + size).astype(bool), "§4.1 5 outside the endpoint decoder",
                 E.ENXIO)
        kinds = np.zeros(n, np.uint8)                 # FREE; classify what passed so far
        fine = np.array([r is None for r in reasons], bool)
        if fine.any():
            kinds[fine] = self._extents.classify_many(starts[fine], lengths[fine])
        duplicate = kinds == ExtentMap.WITHIN
        fail((kinds == ExtentMap.COVERED) | (kinds == ExtentMap.PARTIAL), "§4.1 5 partial overlap", E.ENXIO)
        order = np.argsort(starts, kind="stable")                 # overlaps inside the group
        s, e = starts[order], ends[order]
        clash = np.zeros(n, bool)
        if n > 1:
            hit = (e[:-1] > s[1:]).astype(bool)
            clash[order[1:][hit]] = True
            clash[order[:-1][hit]] = True
        fail(clash, "§4.1 5 overlaps another extent of the chain", E.ENXIO)
        ok = np.array([r is None for r in reasons], bool)
        for i, r in enumerate(reasons):
            if r is not None:
                self._note("extent_refused", tag=str(tag), start=int(starts[i]), length=int(lengths[i]),
                           rule=r[0], errno=E.errorcode[r[1]])
        return ok, duplicate & ok

    def _hpa(self, dpa: np.ndarray) -> np.ndarray:
        lo, _ = self.decoder  # type: ignore[misc]
        return dpa - np.uint64(lo) + np.uint64(self.hpa_base)

    def _respond(self, starts: np.ndarray, lengths: np.ndarray) -> bool:
        """One Add-Response (split over payloads with More when long), in offer order; True
        when the device took it."""
        arr = np.zeros(len(starts), R.UPDATED_EXTENT_DTYPE)
        arr["start"], arr["length"] = starts, lengths
        for payload in R.split_updated_extent_list(arr, self.payload_size):
            code, _ = self.device.mailbox(self.head, R.Opcode.ADD_DC_RESPONSE, payload)
            self._note("add_response", extents=(len(payload) - 8) // 24, status=ReturnCode(code).name)
            if code != ReturnCode.SUCCESS:
                return False
        return True

    # ------------------------------------------------------------------ release (§4.4)

    def _release_event(self, e: np.ndarray) -> None:
        start, length, tag = int(e["start"]), int(e["length"]), _tag_of(e["tag"])
        if self.decoder is None or not self._in_decoder(start, length):
            self._note("release_no_region", rule="§4.4 no region: answered at once", start=start,
                       length=length, errno="ENXIO")
            self._send_release(np.array([start], np.uint64), np.array([length], np.uint64))
            return
        hit = self._extents.lookup(start)
        group = self._groups.get(hit.label) if hit is not None else None
        if group is None or hit.start + hit.length < start + length or group.tag != tag:
            self._note("release_refused", rule="§4.4 no extent of this tag contains the range", start=start,
                       length=length, errno="EINVAL")
            return
        if group.dax is not None:
            self._note("release_deferred", rule="§4.4 DAX device in use: re-issue after it is destroyed",
                       tag=str(group.tag), group=group.id, errno="EBUSY")
            return
        self._drop_group(group, "release")

    def _in_decoder(self, start: int, length: int) -> bool:
        lo, size = self.decoder  # type: ignore[misc]
        return lo <= start and start + length <= lo + size

    def _drop_group(self, group: TagGroup, why: str) -> None:
        """Unregister every member and send one Release DC per extent."""
        self._forget(group)
        ext = group.extents
        self._note("group_released", why=why, tag=str(group.tag), group=group.id, extents=len(ext))
        self._send_release(ext["start"], ext["length"])

    def _forget(self, group: TagGroup) -> None:
        ext = group.extents
        self._media = None
        self._extents.remove_many(ext["start"], ext["length"])
        del self._groups[group.id]
        if self._by_tag.get(group.tag) is group:
            del self._by_tag[group.tag]

    def _send_release(self, starts: np.ndarray, lengths: np.ndarray) -> None:
        """One Release DC (4803h) per extent, as each member's teardown sends it.  (Each
        payload would be one 24-byte entry; the device is called with the extents directly.)"""
        codes = self.device.release_each(self.head, np.stack([starts, lengths], axis=1))
        for s, n, code in zip(starts.tolist(), lengths.tolist(), codes):
            self._note("release_dc", start=s, length=n, status=code.name)

    def lose(self, tag: Union[uuid.UUID, str], why: str) -> None:
        """Forget a tag group without telling the device: the capacity was taken by force and
        the host (or the model driving it) stops using it.  Linux itself ignores Forced
        Capacity Release (§4.4); this is the step a model takes when the loss is known."""
        group = self.group(tag)
        if group.dax is not None:
            raise HostError(f"tag {group.tag} is claimed by {group.dax.name}", E.EBUSY)
        self._forget(group)
        self._note("group_lost", tag=str(group.tag), group=group.id, why=why)

    # ------------------------------------------------------------------ region lifecycle (§4.5)

    def create_region(self) -> None:
        """Create the CXL region over the first DC partition and recover the extents the device
        already lists (Get Extent List, rereading when the generation changes); recovered
        extents go through the same pipeline but are not acknowledged again."""
        if self.decoder is not None:
            raise HostError("the region already exists", E.EEXIST)
        p = self.partitions[0]
        self.decoder = (p.base, self._decoder_length or p.length)
        try:
            chain = self._scan()
        except HostError:
            self.decoder = None                 # a failed create leaves no region behind
            raise
        self._note("region_created", decoder=list(self.decoder), recovered=len(chain))
        if len(chain):
            self._add_chain(chain, recovered=True)

    def _scan(self) -> np.ndarray:
        for attempt in range(RESCAN_RETRIES):
            parts, first = [], None
            while True:
                got = sum(len(x) for x in parts)
                out = self.device.get_extent_list(self.head, None, got)
                if first is None:
                    first = (out.generation, out.total_extents)
                elif (out.generation, out.total_extents) != first:
                    break                                      # changed under us: reread
                ext = out.extents if isinstance(out.extents, np.ndarray) else \
                    R.records_to_array(list(out.extents), R.DcExtent)
                parts.append(ext)
                if got + len(ext) >= out.total_extents or not len(ext):
                    return np.concatenate(parts) if parts else np.zeros(0, R.EXTENT_DTYPE)
            self._note("rescan_retry", attempt=attempt + 1)
        raise HostError(f"the extent list kept changing over {RESCAN_RETRIES} reads", E.EAGAIN)

    def destroy_region(self, why: str = "region destroy") -> None:
        """Destroy the region (or unload the driver): every group is released to the device.
        Refused with EBUSY while a DAX device claims a group."""
        if self.decoder is None:
            raise HostError("there is no region", E.ENXIO)
        if self._daxes:
            raise HostError(f"{len(self._daxes)} DAX devices still claim capacity", E.EBUSY)
        for group in list(self._groups.values()):
            self._drop_group(group, why)
        self.decoder = None
        self._note("region_destroyed", why=why)

    def unload(self) -> None:
        """``dax_cxl`` unload: as region destroy."""
        self.destroy_region("driver unload")

    # ------------------------------------------------------------------ DAX (§4.3)

    def create_dax(self, tag: Union[uuid.UUID, str]) -> DaxDevice:
        """Create a DAX device and claim capacity by writing ``tag`` to its uuid: a tag claims
        its whole group (dense sequence required); ``"0"`` claims one untagged extent.
        ENOENT when nothing matches (no device is left behind)."""
        if self.decoder is None:
            raise HostError("there is no DC region", E.ENXIO)
        if isinstance(tag, str) and tag == "0":
            free = [g for g in self._groups.values() if g.tag == NULL_UUID and g.dax is None]
            if not free:
                raise HostError("no unclaimed untagged extent", E.ENOENT)
            group = min(free, key=lambda g: int(g.extents["start"][0]))
        else:
            t = tag if isinstance(tag, uuid.UUID) else _parse_uuid(tag)
            group = self._by_tag.get(t)
            if group is None or t == NULL_UUID:
                raise HostError(f"no capacity with tag {t}", E.ENOENT)
            if group.dax is not None:
                raise HostError(f"tag {t} is claimed by {group.dax.name}", E.EBUSY)
            if group.view is None:
                raise HostError(f"tag {t}: sequence numbers are not dense", E.EINVAL)
        dax = DaxDevice(f"dax0.{self._next_dax}", self, group)
        self._next_dax += 1
        group.dax = dax
        self._daxes.append(dax)
        self._note("dax_created", name=dax.name, tag=str(group.tag), size=dax.size)
        return dax

    def destroy_dax(self, dax: DaxDevice) -> None:
        """Destroy a DAX device (resize to 0): its group is unclaimed; a deferred release can
        then be re-issued."""
        if dax not in self._daxes:
            raise HostError(f"{dax.name} is not a DAX device of this host", E.ENODEV)
        self._daxes.remove(dax)
        if dax.group is not None:
            dax.group.dax = None
        self._note("dax_destroyed", name=dax.name, tag=str(dax.uuid))
        dax.group = None

    # ------------------------------------------------------------------ state

    @property
    def groups(self) -> List[TagGroup]:
        """The live tag groups, oldest first."""
        return list(self._groups.values())

    @property
    def dax_devices(self) -> List[DaxDevice]:
        return list(self._daxes)

    def group(self, tag: Union[uuid.UUID, str]) -> TagGroup:
        """The live group of a (non-null) tag; HostError ENOENT if there is none."""
        t = tag if isinstance(tag, uuid.UUID) else _parse_uuid(tag)
        try:
            return self._by_tag[t]
        except KeyError:
            raise HostError(f"no live group with tag {t}", E.ENOENT) from None

    def view(self, tag: Union[uuid.UUID, str]) -> TagView:
        """The contiguous view of a tag (logical offset -> HPA)."""
        g = self.group(tag)
        if g.view is None:
            raise HostError(f"tag {g.tag}: sequence numbers are not dense", E.EINVAL)
        return g.view

    def extents(self) -> np.ndarray:
        """Every extent the host holds, in DPA order, as (start, length) uint64 columns."""
        s, n, _, _ = self._extents.to_arrays()
        return np.stack([s, n], axis=1) if len(s) else np.zeros((0, 2), np.uint64)

    @property
    def staged(self) -> int:
        """Records staged in the open More chain."""
        return self._staged_count

    def media_map(self) -> ExtentMap:
        """HPA -> DPA for every extent the host holds (for verify_views across hosts, and the
        last stage of a guest's GPA -> HPA -> DPA chain).  Built once per change of the
        host's extents and shared between callers: read it, do not modify it."""
        if self._media is None:
            s, n, t, _ = self._extents.to_arrays()
            self._media = ExtentMap.from_arrays(t, n, s) if len(s) else ExtentMap(_GRANULE)
        return self._media


def _parse_uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(text))
    except ValueError:
        raise HostError(f"{text!r} is not a UUID", E.EINVAL) from None
