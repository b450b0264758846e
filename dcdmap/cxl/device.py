"""A Dynamic Capacity Device: regions, heads, offers, responses and releases (reference §2, §3, §5).

The device follows QEMU's emulation (``hw/mem/cxl_type3.c``, ``hw/cxl/cxl-mailbox-utils.c``)
rule by rule, extended to several heads (hosts) as in the MH-SLD model (§5.5) and to the
selection policies QEMU refuses (free, contiguous, enable-shared-access).

State, all in engine maps (no Python loop over extents):

* ``holders``: a :class:`~dcdmap.SharingIndex` of which heads hold each DPA range, pending or
  accepted.  A byte nobody holds is free.  Every head sees the same DPA space (as in the
  MH-SLD model): shared capacity has the same DPAs on every head it is given to; what differs
  between heads is how it is split into extents and the order they arrive in.
* per head, ``accepted`` and ``pending`` :class:`~dcdmap.ExtentMap` (DPA ranges; the label
  of each extent is a record id naming its tag and sequence number), the FIFO of pending
  offers, the queue of DC event records not yet read, and the generation number.

Capacity is conserved: for every region, free bytes + the bytes held by some head = the
region length, and the holders index equals the union of every head's pending and accepted
maps (:meth:`Device.check_invariants`).

    >>> from dcdmap.cxl import Device, Region
    >>> dev = Device([Region(base=0, length=1 << 30)], heads=2, seed=1)
    >>> offer = dev.add_capacity(0, 0, [(0, 4 << 20), (8 << 20, 2 << 20)])
    >>> [e["more"] for e in dev.events_view(0)]
    [True, False]
    >>> dev.add_response(0, [(0, 4 << 20)])        # accept the first extent only
    >>> dev.capacity(0)
    Capacity(total=1073741824, free=1069547520, pending=0, accepted=4194304)
"""
from __future__ import annotations

import collections
import enum
import json
import random
import uuid
from dataclasses import dataclass
from typing import IO, Any, Deque, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from .._core import ExtentMap, SharingIndex
from ..errors import ConfigurationError, CorruptDataError, InputTypeError, MailboxError, RequestError
from . import records as R
from .records import (
    DC_EVENT_DTYPE, EXTENT_DTYPE, NULL_UUID, DcEventType, RemovalPolicy, ReturnCode, SelectionPolicy,
)
from .regions import Region, assign_handles, check_regions

__all__ = ["Device", "Offer", "Capacity", "MAX_EXTENTS", "MAILBOX_PAYLOAD_SIZE", "ExtentsLike"]

MAX_EXTENTS = 512                # QEMU CXL_NUM_EXTENTS_SUPPORTED (pending + accepted)
MAILBOX_PAYLOAD_SIZE = 1 << 11   # QEMU CXL_MAILBOX_MAX_PAYLOAD_SIZE
_OPCODES = (R.Opcode.GET_DC_CONFIG, R.Opcode.GET_DC_EXTENT_LIST, R.Opcode.ADD_DC_RESPONSE, R.Opcode.RELEASE_DC)
_GRANULE = 64                    # the engine granule: 64 B, Linux's smallest block size
_LOG_VERSION = 1

ExtentsLike = Union[Sequence[Tuple[int, int]], np.ndarray]


class Capacity(NamedTuple):
    """Bytes of one region (or of all regions): ``free + held = total``, where held bytes are
    pending or accepted on at least one head (a byte shared by several heads counts once;
    a byte pending on one head and accepted on another counts as accepted)."""

    total: int
    free: int
    pending: int
    accepted: int


@dataclass(frozen=True, eq=False)
class Offer:
    """One add request as the device holds it until the head answers: a pending extent group.

    ``extents`` is an array of :data:`~dcdmap.cxl.EXTENT_DTYPE` in the order the events carry
    them (tag and sequence number included).
    """

    id: int
    head: int
    region: int
    policy: SelectionPolicy
    tag: uuid.UUID
    extents: np.ndarray

    @property
    def length(self) -> int:
        """Total bytes offered."""
        return int(self.extents["length"].sum())


class _Head:
    """One head's state (see the module docstring)."""

    __slots__ = ("accepted", "pending", "offers", "events", "queued", "overflow", "generation",
                 "sanitize", "response", "tags")

    def __init__(self) -> None:
        self.accepted = ExtentMap(_GRANULE)
        self.pending = ExtentMap(_GRANULE)
        self.offers: Deque[Offer] = collections.deque()
        self.events: Deque[np.ndarray] = collections.deque()   # chunks of DC_EVENT_DTYPE
        self.queued = 0
        self.overflow = 0
        self.generation = 0
        self.sanitize = ExtentMap(_GRANULE)   # ranges a release asked to sanitize
        self.response: List[Tuple[np.ndarray, np.ndarray]] = []   # Add-Response payloads with More
        # tag id -> [accepted bytes, lowest DPA, end of the highest extent]: where to look for
        # a tag's extents without scanning the whole map (the span may be wider than needed).
        self.tags: Dict[int, List[int]] = {}

    def tracked(self) -> int:
        return len(self.accepted) + len(self.pending)


def _u64(values: Any, what: str) -> np.ndarray:
    a = np.asarray(values)
    if a.size == 0:
        return np.zeros(0, np.uint64)
    if a.dtype.kind not in "iu":
        raise InputTypeError(f"{what} must be integers, not {a.dtype}")
    if a.dtype.kind == "i" and (a < 0).any():
        raise RequestError(f"{what} must not be negative")
    return a.astype(np.uint64)


def _pairs(extents: Any, what: str = "extents") -> Tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) uint64 arrays from (start, length) pairs, an (n, 2) array, or a
    structured array with ``start`` and ``length`` fields."""
    if isinstance(extents, np.ndarray) and extents.dtype.names:
        return _u64(extents["start"], what), _u64(extents["length"], what)
    if isinstance(extents, R.UpdatedExtentList):
        return _pairs(extents.extents if isinstance(extents.extents, np.ndarray)
                      else [(e.start, e.length) for e in extents.extents], what)
    if isinstance(extents, list) and all(type(p) is tuple and len(p) == 2 and type(p[0]) is int
                                         and type(p[1]) is int for p in extents):
        a = extents                                     # the common case, without numpy objects
        if any(s < 0 or n < 0 or s >> 64 or n >> 64 for s, n in a):
            raise RequestError(f"{what} must be in 0 .. 2**64-1")
        arr = np.array(a, dtype=np.uint64).reshape(-1, 2)
        return np.ascontiguousarray(arr[:, 0]), np.ascontiguousarray(arr[:, 1])
    try:
        a = np.asarray(extents, dtype=object) if not isinstance(extents, np.ndarray) else extents
        if a.size == 0:
            return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
        if a.ndim != 2 or a.shape[1] != 2:
            raise ValueError
        if a.dtype == object and not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                         for v in a.ravel().tolist()):
            raise TypeError
        pairs = [(int(s), int(n)) for s, n in a.tolist()] if a.dtype == object else None
    except (TypeError, ValueError):
        raise InputTypeError(f"{what} must be (start, length) pairs") from None
    if pairs is not None:
        if any(s < 0 or n < 0 or s >= 1 << 64 or n >= 1 << 64 for s, n in pairs):
            raise RequestError(f"{what} must be in 0 .. 2**64-1")
        a = np.array(pairs, dtype=np.uint64).reshape(-1, 2)
    a = _u64(a, what)
    return np.ascontiguousarray(a[:, 0]), np.ascontiguousarray(a[:, 1])


def first_overlap(starts: np.ndarray, lengths: np.ndarray) -> Optional[int]:
    """The smallest k such that ranges 0..k contain two that overlap, or None.

    This is the entry a check that walks the list in order, remembering what it has seen,
    stops at (QEMU's bitmap checks).  Vectorised: a sort per probe of a binary search.

    >>> first_overlap(np.array([0, 100, 10], np.uint64), np.array([50, 10, 10], np.uint64))
    2
    """
    def overlaps(k: int) -> bool:
        used = lengths[:k] > 0                          # an empty range marks no byte
        s, n = starts[:k][used], lengths[:k][used]
        order = np.argsort(s, kind="stable")
        s, last = s[order], s[order] + (n[order] - np.uint64(1))   # last bytes: no wrap at 2**64
        return bool((last[:-1] >= s[1:]).any())

    n = len(starts)
    if n < 2 or not overlaps(n):
        return None
    lo, hi = 2, n              # overlaps(hi) holds; find the smallest such prefix length
    while lo < hi:
        mid = (lo + hi) // 2
        if overlaps(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo - 1


class _Records:
    """Record ids (the labels in the head maps) -> tag id and sequence number, growing arrays."""

    def __init__(self) -> None:
        self.tag = np.zeros(1024, np.int32)
        self.seq = np.zeros(1024, np.uint16)
        self.n = 0
        self.tags: List[uuid.UUID] = []
        self.tag_ids: Dict[uuid.UUID, int] = {}
        self.tag_bytes = np.zeros((16, 16), np.uint8)

    def tag_id(self, tag: uuid.UUID) -> int:
        tid = self.tag_ids.get(tag)
        if tid is None:
            tid = self.tag_ids[tag] = len(self.tags)
            self.tags.append(tag)
            if tid == len(self.tag_bytes):
                self.tag_bytes = np.concatenate([self.tag_bytes, np.zeros_like(self.tag_bytes)])
            self.tag_bytes[tid] = np.frombuffer(tag.bytes, np.uint8)
        return tid

    def add(self, tag: uuid.UUID, seqs: np.ndarray) -> np.ndarray:
        k = len(seqs)
        if self.n + k > len(self.tag):
            size = max(2 * len(self.tag), self.n + k)
            self.tag = np.resize(self.tag, size)
            self.seq = np.resize(self.seq, size)
        ids = np.arange(self.n, self.n + k, dtype=np.uint32)
        self.tag[self.n:self.n + k] = self.tag_id(tag)
        self.seq[self.n:self.n + k] = seqs
        self.n += k
        return ids

    def extents(self, starts: np.ndarray, lengths: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """EXTENT_DTYPE records for extents of the given record ids."""
        out = np.zeros(len(starts), EXTENT_DTYPE)
        out["start"] = starts
        out["length"] = lengths
        lab = labels.astype(np.intp)
        out["tag"] = self.tag_bytes[self.tag[lab]].view("V16").ravel()
        out["shared_seq"] = self.seq[lab]
        return out


def _tag(value: Any) -> uuid.UUID:
    if value is None:
        return NULL_UUID
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, (bytes, bytearray)) and len(value) == 16:
        return uuid.UUID(bytes=bytes(value))
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise RequestError(f"tag {value!r} is not a UUID") from None


class Device:
    """A DCD with up to 8 DC regions and one or more heads (hosts), per reference §2, §3, §5.

    Parameters
    ----------
    regions : DC regions (:class:`~dcdmap.cxl.Region`), checked with ``check_regions``.
    heads : number of heads (hosts), 1..64; a head's number is its host id.
    seed : seeds every choice the device makes (free and contiguous placement, the split and
        order of shared capacity per head).
    max_extents : extents a head may track, pending + accepted (QEMU: 512).
    max_tags : the tag count reported in events and Get DC Configuration (QEMU: 0); not
        enforced.
    event_log_size : DC event records a head's log holds before records are dropped and
        counted as overflow (QEMU: 8); None = unbounded.
    vary_shared : when capacity is shared with another head, split it at different points and
        deliver it in a different (seeded) order than to the first head.
    require_offer_order : an Add-Response must list accepted extents in the order offered
        (the K11 kernel mock, CXL r4.0 8.2.10.9.9.3); QEMU does not check this.
    keep_log : keep every operation in :attr:`log` (default).  False keeps only the first
        entry (the configuration): for long runs, where the log would hold millions of
        entries; :meth:`write_log` and the QMP conversion then have nothing to work on.

    Thread safety: none; one thread drives a device.
    """

    def __init__(self, regions: Sequence[Region], *, heads: int = 1, seed: int = 0,
                 max_extents: int = MAX_EXTENTS, max_tags: int = 0,
                 event_log_size: Optional[int] = None, vary_shared: bool = True,
                 require_offer_order: bool = True, keep_log: bool = True) -> None:
        regions = tuple(regions)
        check_regions(regions)
        regions = assign_handles(regions)
        if not isinstance(heads, int) or not 1 <= heads <= 64:
            raise ConfigurationError(f"heads must be 1..64, not {heads!r}")
        if not isinstance(max_extents, int) or max_extents < 0 or max_extents >= 1 << 32:
            raise ConfigurationError(f"max_extents must be a u32, not {max_extents!r}")
        if event_log_size is not None and (not isinstance(event_log_size, int) or event_log_size < 1):
            raise ConfigurationError(f"event_log_size must be a positive int or None, not {event_log_size!r}")
        self.regions: Tuple[Region, ...] = regions
        self.nheads = heads
        self.seed = seed
        self.max_extents = max_extents
        self.max_tags = max_tags
        self.event_log_size = event_log_size
        self.vary_shared = vary_shared
        self.require_offer_order = require_offer_order
        self._rng = random.Random(seed)
        self._heads = [_Head() for _ in range(heads)]
        self._holders = SharingIndex(_GRANULE)
        self._records = _Records()
        self._next_offer = 0
        self._bases = np.array([r.base for r in regions], np.uint64)
        self._lasts = np.array([r.end - 1 for r in regions], np.uint64)
        self._blocks = np.array([r.block_size for r in regions], np.uint64)
        self._sanitize_flag = np.array([r.sanitize_on_release for r in regions], bool)
        self.sanitized_bytes = 0
        self.log: List[Dict[str, Any]] = [{"op": "device", "version": _LOG_VERSION, "config": self.config()}]
        self.keep_log = keep_log

    # ------------------------------------------------------------------ configuration

    def config(self) -> Dict[str, Any]:
        """The constructor arguments as JSON-ready data (``Device(**Device.from_config(c))``)."""
        return {
            "regions": [dict(vars(r)) for r in self.regions],
            "heads": self.nheads, "seed": self.seed, "max_extents": self.max_extents,
            "max_tags": self.max_tags, "event_log_size": self.event_log_size,
            "vary_shared": self.vary_shared, "require_offer_order": self.require_offer_order,
        }

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Device":
        """A new device from :meth:`config` output."""
        try:
            kw = dict(config)
            kw["regions"] = [Region(**r) for r in kw["regions"]]
            return cls(**kw)
        except (TypeError, KeyError) as e:
            raise ConfigurationError(f"bad device configuration: {e}") from None

    def dsmas(self) -> Dict[int, Tuple[bool, bool]]:
        """CDAT DSMAS attributes by DSMAD handle: (shareable, read_only) (§2.3)."""
        return {r.dsmad_handle: (r.shareable, r.read_only) for r in self.regions}

    # ------------------------------------------------------------------ helpers

    def _head(self, head: Any) -> _Head:
        if isinstance(head, bool) or not isinstance(head, (int, np.integer)) or not 0 <= head < self.nheads:
            raise RequestError(f"host id {head!r} is not a head of this device (0..{self.nheads - 1})")
        return self._heads[int(head)]

    def _region(self, region: Any) -> Region:
        if not self.regions:
            raise RequestError("No dynamic capacity support from the device")
        if isinstance(region, bool) or not isinstance(region, (int, np.integer)) or region < 0:
            raise RequestError(f"region {region!r} is not a region index")
        if region >= len(self.regions):
            raise RequestError("region id is too large")
        return self.regions[int(region)]

    def _addressed(self, head: Any, region: Any, tag: Any) -> Tuple[_Head, Region, uuid.UUID]:
        """The head, region and tag a request names, checked in QEMU's order."""
        return self._head(head), self._region(region), _tag(tag)

    def _record(self, entry: Dict[str, Any]) -> None:
        if self.keep_log:
            self.log.append(entry)

    def _events(self, h: int, kind: DcEventType, region: int, ext: np.ndarray) -> None:
        """Queue one event record per extent, More on all but the last (§3.3)."""
        head = self._heads[h]
        ev = np.zeros(len(ext), DC_EVENT_DTYPE)
        ev["event_type"] = kind
        ev["validity_flags"] = 1
        ev["host_id"] = h
        ev["region_index"] = region
        ev["flags"][:-1] = 1
        ev["extent"] = ext
        ev["available_extents"] = max(0, self.max_extents - head.tracked())
        ev["available_tags"] = self.max_tags
        if self.event_log_size is not None:
            room = max(0, self.event_log_size - head.queued)
            head.overflow += max(0, len(ev) - room)
            ev = ev[:room]
        if len(ev):
            head.events.append(ev)
            head.queued += len(ev)

    def _check_request(self, reg: Region, starts: np.ndarray, lengths: np.ndarray,
                       state_checks: Sequence[Tuple[Any, str]] = ()) -> None:
        """QEMU's per-extent checks of a QMP add/release request, in its order (§5.2): every
        check of extent 0, then of extent 1, and so on.  ``state_checks`` are (function of
        (starts, lengths) -> bad mask, text) checks against the device state, run on an
        extent after its shape checks (QEMU's accepted / pending checks)."""
        bs = reg.block_size
        offs = starts - np.uint64(reg.base) if len(starts) else starts
        # offs wraps below the base exactly as QEMU's u64 offset would (DPA = base + offset).
        bad = [
            lengths == 0,
            (offs % np.uint64(bs) != 0) | (lengths % np.uint64(bs) != 0),
            lengths > np.uint64(reg.length) - np.minimum(offs, np.uint64(reg.length)),
        ]
        texts = ["extent with 0 length is not allowed", "dpa or len is not aligned to region block size",
                 "extent range is beyond the region end"]
        shaped = ~(bad[0] | bad[1] | bad[2])
        first = [int(np.argmax(b)) if b.any() else len(starts) for b in bad]
        dup = first_overlap(starts, lengths)
        first.append(len(starts) if dup is None else dup)
        texts.append("duplicate or overlapped extents are detected")
        for check, text in state_checks:
            mask = np.zeros(len(starts), bool)
            if shaped.any():
                mask[shaped] = check(starts[shaped], lengths[shaped])
            first.append(int(np.argmax(mask)) if mask.any() else len(starts))
            texts.append(text)
        i = min(range(len(first)), key=lambda k: (first[k], k))
        if first[i] < len(starts):
            raise RequestError(texts[i])

    # ------------------------------------------------------------------ FM side: add

    def add_capacity(self, head: int, region: int, extents: ExtentsLike = (), *,
                     policy: Union[SelectionPolicy, int, str] = SelectionPolicy.PRESCRIPTIVE,
                     length: Optional[int] = None, tag: Any = None) -> Offer:
        """Offer capacity to ``head``: one pending extent group, one event per extent (§3.3, §5.2).

        ``prescriptive``: ``extents`` are (DPA, length) pairs, checked as QEMU checks them.
        ``free`` / ``contiguous``: the device picks ``length`` bytes of free capacity in the
        region, in any number of extents / in one extent (seeded).  ``enable-shared-access``:
        the capacity other heads accepted under ``tag`` in this (shareable) region is offered
        to ``head`` too, split and ordered for this head (``vary_shared``), with sequence
        numbers giving its place in the shared layout.

        Sequence numbers: 0..n-1 in offer order in a shareable region, 0 otherwise.  Raises
        RequestError (QEMU's text where QEMU has the check) and changes nothing.
        """
        entry = {"op": "add_capacity", "head": _plain(head), "region": _plain(region),
                 "policy": _plain(policy), "tag": str(tag), "request": _ext_list(extents), "length": _plain(length)}
        rng = self._rng.getstate()
        try:
            offer = self._add_capacity(head, region, extents, policy, length, tag)
        except RequestError as e:
            self._rng.setstate(rng)                  # a refused request draws nothing
            self._record({**entry, "error": str(e)})
            raise
        self._record({**entry, "policy": offer.policy.name, "tag": str(offer.tag), "offer": offer.id,
                      "extents": _ext_rows(offer.extents)})
        return offer

    def _add_capacity(self, head: Any, region: Any, extents: Any, policy: Any, length: Any, tag: Any) -> Offer:
        pol = _policy(SelectionPolicy, policy)
        h, reg, t = self._addressed(head, region, tag)
        if pol == SelectionPolicy.PRESCRIPTIVE:
            starts, lengths = _pairs(extents)
            self._check_request(reg, starts, lengths, [
                (lambda s, n: h.accepted.classify_many(s, n) != ExtentMap.FREE,
                 "cannot add DPA already accessible to the same LD"),
                (lambda s, n: h.pending.classify_many(s, n) != ExtentMap.FREE,
                 "cannot add DPA again while still pending")])
            seqs = np.arange(len(starts), dtype=np.uint16) if reg.shareable else np.zeros(len(starts), np.uint16)
        elif pol == SelectionPolicy.ENABLE_SHARED_ACCESS:
            starts, lengths, seqs = self._shared_layout(int(head), int(region), reg, t)
        else:
            if length is None or isinstance(length, bool) or not isinstance(length, (int, np.integer)) \
                    or length <= 0:
                raise RequestError(f"{pol.name.lower()} selection needs a positive length")
            length = int(length)
            if length > reg.length:
                raise RequestError(f"not enough free capacity in the region for {length:#x} bytes")
            if length % reg.block_size:
                raise RequestError("dpa or len is not aligned to region block size")
            starts, lengths = self._choose_free(reg, length, contiguous=pol == SelectionPolicy.CONTIGUOUS)
            seqs = np.arange(len(starts), dtype=np.uint16) if reg.shareable else np.zeros(len(starts), np.uint16)
        if len(starts):
            if (h.accepted.classify_many(starts, lengths) != ExtentMap.FREE).any():
                raise RequestError("cannot add DPA already accessible to the same LD")
            if (h.pending.classify_many(starts, lengths) != ExtentMap.FREE).any():
                raise RequestError("cannot add DPA again while still pending")
            if pol != SelectionPolicy.ENABLE_SHARED_ACCESS and \
                    (self._holders.classify_many(starts, lengths) != ExtentMap.FREE).any():
                raise RequestError("cannot add DPA held by another host")
        # Checked: apply.
        ids = self._records.add(t, seqs)
        ext = self._records.extents(starts, lengths, ids)
        offer = Offer(self._next_offer, int(head), int(region), pol, t, ext)
        self._next_offer += 1
        if len(starts):                       # QEMU queues no group and no event for an empty list
            h.pending.insert_many(starts, lengths, labels=ids)
            self._holders.add_many(np.full(len(starts), int(head), np.uint64), starts, lengths)
            h.offers.append(offer)
            self._events(int(head), DcEventType.ADD_CAPACITY, int(region), ext)
        return offer

    def _choose_free(self, reg: Region, length: int, contiguous: bool) -> Tuple[np.ndarray, np.ndarray]:
        """Free capacity of the region, in block-aligned pieces (seeded)."""
        gaps = self._holders.gaps(reg.base, reg.end)
        bs = np.uint64(reg.block_size)
        lo = (gaps.starts + bs - np.uint64(1)) // bs * bs                  # block-aligned gaps
        hi = (gaps.starts + gaps.lengths) // bs * bs
        keep = hi > lo
        lo, size = lo[keep], hi[keep] - lo[keep]
        if contiguous:
            fits = np.flatnonzero(size >= np.uint64(length))
            if not len(fits):
                raise RequestError(f"no {length:#x} bytes of contiguous free capacity in the region")
            k = int(fits[self._rng.randrange(len(fits))])
            return np.array([lo[k]], np.uint64), np.array([length], np.uint64)
        if int(size.astype(object).sum()) < length:
            raise RequestError(f"not enough free capacity in the region for {length:#x} bytes")
        order = np.array(self._rng.sample(range(len(lo)), len(lo)), dtype=np.intp)
        sz = size[order]
        before = np.cumsum(sz) - sz          # bytes taken before each gap (< 2**64: inside a region)
        want = np.uint64(length)
        take = np.where(before < want, np.minimum(sz, want - np.minimum(before, want)), np.uint64(0))
        used = take > 0
        return lo[order][used], take[used]

    def _shared_layout(self, h: int, region: int, reg: Region, t: uuid.UUID
                       ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Enable-shared-access: the tag's capacity as another head holds it, re-split and
        re-ordered for head ``h``, with the sequence numbers of the shared layout."""
        if t == NULL_UUID:
            raise RequestError("enable-shared-access needs a tag")
        if not reg.shareable:
            raise RequestError("region is not shareable")
        tid = self._records.tag_ids.get(t)
        src = None
        most = 0          # the head holding the most bytes of the tag (the lowest on a tie)
        for other in range(self.nheads):
            if other == h or tid is None or tid not in self._heads[other].tags:
                continue
            ext = self._tag_extents(self._heads[other], reg, t)
            held = int(ext["length"].astype(object).sum())
            if held > most:
                src, most = (ext["start"], ext["length"], ext["shared_seq"]), held
        if src is None:
            raise RequestError("no capacity with this tag to share")
        s, n, q = src
        order = np.lexsort((s, q))                     # the shared layout: by seq, then DPA
        s, n = s[order], n[order]
        if self.vary_shared:
            s, n = self._resplit(s, n, reg.block_size)
            perm = np.array(self._rng.sample(range(len(s)), len(s)), dtype=np.intp)
        else:
            perm = np.arange(len(s))
        seqs = np.arange(len(s), dtype=np.uint16)
        return s[perm], n[perm], seqs[perm]

    def _resplit(self, s: np.ndarray, n: np.ndarray, bs: int) -> Tuple[np.ndarray, np.ndarray]:
        """Merge pieces contiguous in both layout and DPA, then cut at random block boundaries."""
        joined = np.concatenate([[False], s[:-1] + n[:-1] == s[1:]])
        run = np.cumsum(~joined) - 1
        rs = s[~joined]
        rn = np.bincount(run, weights=n.astype(np.float64)).astype(np.uint64) \
            if int(n.max()) < 1 << 52 else np.array([int(x) for x in np.add.reduceat(n.astype(object), np.flatnonzero(~joined))], np.uint64)
        blocks = rn // np.uint64(bs)
        cuts_s, cuts_n = [], []
        for a, b in zip(rs.tolist(), blocks.tolist()):     # one step per merged run, not per extent
            k = self._rng.randrange(0, min(b, 4)) if b > 1 else 0
            points = sorted(self._rng.sample(range(1, b), k)) if k else []
            edges = [0, *points, b]
            cuts_s.extend(a + e * bs for e in edges[:-1])
            cuts_n.extend((edges[i + 1] - edges[i]) * bs for i in range(len(edges) - 1))
        return np.array(cuts_s, np.uint64), np.array(cuts_n, np.uint64)

    # ------------------------------------------------------------------ FM side: release

    def release_capacity(self, head: int, region: int, extents: ExtentsLike = (), *,
                         policy: Union[RemovalPolicy, int, str] = RemovalPolicy.PRESCRIPTIVE,
                         tag: Any = None, forced: bool = False, sanitize: bool = False) -> np.ndarray:
        """Ask ``head`` to release capacity: one Release (or Forced Release) event per extent.

        ``prescriptive``: the (DPA, length) ranges, checked as QEMU checks them (they must be
        fully accepted and not pending; a range may cover part of an extent).  ``tag-based``:
        every extent the head accepted under ``tag`` in the region.  A normal release changes
        nothing until the host answers with Release DC; a ``forced`` release takes the
        capacity back at once (the host loses it whatever it does).  ``sanitize`` asks for the
        media to be sanitized when released (as the region flag does).  Returns the extents
        named in the events (EXTENT_DTYPE).
        """
        entry = {"op": "release_capacity", "head": _plain(head), "region": _plain(region),
                 "policy": _plain(policy), "tag": str(tag), "forced": bool(forced), "sanitize": bool(sanitize),
                 "request": _ext_list(extents)}
        try:
            ext = self._release_capacity(head, region, extents, policy, tag, forced, sanitize)
        except RequestError as e:
            self._record({**entry, "error": str(e)})
            raise
        self._record({**entry, "extents": _ext_rows(ext)})
        return ext

    def _release_capacity(self, head: Any, region: Any, extents: Any, policy: Any, tag: Any,
                          forced: bool, sanitize: bool) -> np.ndarray:
        pol = _policy(RemovalPolicy, policy)
        h, reg, t = self._addressed(head, region, tag)
        if pol == RemovalPolicy.PRESCRIPTIVE:
            starts, lengths = _pairs(extents)
            self._check_request(reg, starts, lengths, [
                (lambda s, n: h.pending.classify_many(s, n) != ExtentMap.FREE,
                 "cannot release extent with pending DPA range"),
                (lambda s, n: ~np.isin(h.accepted.classify_many(s, n), [ExtentMap.WITHIN, ExtentMap.COVERED]),
                 "cannot release extent with non-existing DPA range")])
            ext = self._records.extents(*_pieces(h.accepted, starts, lengths))
        else:
            if t == NULL_UUID:
                raise RequestError("tag-based removal needs a tag")
            ext = self._tag_extents(h, reg, t)
            if not len(ext):
                raise RequestError("no extent with this tag to release")
        kind = DcEventType.FORCED_CAPACITY_RELEASE if forced else DcEventType.RELEASE_CAPACITY
        if forced:
            self._take_back(int(head), ext["start"], ext["length"], sanitize)
        elif sanitize and len(ext):
            h.sanitize.remove_many(ext["start"], ext["length"])
            h.sanitize.insert_many(ext["start"], ext["length"])
        if len(ext):
            self._events(int(head), kind, int(region), ext)
        return ext

    def _tag_extents(self, h: _Head, reg: Region, t: uuid.UUID) -> np.ndarray:
        """The extents a head accepted under tag ``t`` in region ``reg`` (EXTENT_DTYPE, DPA order)."""
        tid = self._records.tag_ids.get(t)
        span = h.tags.get(tid) if tid is not None else None
        lo, hi = (max(span[1], reg.base), min(span[2], reg.end)) if span else (0, 0)
        if lo >= hi:
            return np.zeros(0, EXTENT_DTYPE)
        s, n, _, lab = h.accepted.overlapping(lo, hi - lo)
        mine = (self._records.tag[lab.astype(np.intp)] == tid) & (s >= np.uint64(reg.base))
        return self._records.extents(s[mine], n[mine], lab[mine])

    def _count_tags(self, h: _Head, starts: np.ndarray, lengths: np.ndarray, labels: np.ndarray,
                    sign: int) -> None:
        """Add (sign 1) or take away (sign -1) accepted bytes per tag in the head's tag index."""
        tids = self._records.tag[labels.astype(np.intp)]
        for tid in np.unique(tids).tolist():
            mine = tids == tid
            nbytes = int(lengths[mine].astype(object).sum())
            entry = h.tags.get(tid)
            if sign > 0:
                lo, hi = int(starts[mine].min()), int((starts[mine].astype(object) + lengths[mine]).max())
                if entry is None:
                    h.tags[tid] = [nbytes, lo, hi]
                else:
                    entry[0] += nbytes
                    entry[1], entry[2] = min(entry[1], lo), max(entry[2], hi)
            elif entry is not None:
                entry[0] -= nbytes
                if entry[0] <= 0:
                    del h.tags[tid]

    def _take_back(self, h: int, starts: np.ndarray, lengths: np.ndarray, sanitize: bool) -> None:
        """Remove accepted ranges of head h (already checked) and free what nobody else holds.

        Bytes that become free are sanitized (counted) where the region says so, the release
        asked for it (``sanitize``), or an earlier release request marked them."""
        if not len(starts):
            return
        head = self._heads[h]
        self._count_tags(head, *_pieces(head.accepted, starts, lengths), -1)
        head.accepted.remove_many(starts, lengths)
        self._holders.remove_many(np.full(len(starts), h, np.uint64), starts, lengths)
        whole = self._sanitize_flag[np.searchsorted(self._bases, starts, side="right") - 1] | sanitize
        wipe_s, wipe_n = [starts[whole]], [lengths[whole]]
        if len(head.sanitize):
            marked = _pieces(head.sanitize, starts[~whole], lengths[~whole])
            wipe_s.append(marked[0])
            wipe_n.append(marked[1])
            head.sanitize.remove_many(starts, lengths)
        for s, n in zip(np.concatenate(wipe_s).tolist(), np.concatenate(wipe_n).tolist()):
            self.sanitized_bytes += int(self._holders.gaps(s, s + n).lengths.astype(object).sum())
        head.generation += 1

    # ------------------------------------------------------------------ host side: mailbox

    def _malformed(self, starts: np.ndarray, lengths: np.ndarray) -> None:
        """QEMU ``cxl_detect_malformed_extent_list``: the first entry that lies outside one DC
        region (INVALID_PA), is not block-aligned, or overlaps an earlier entry
        (INVALID_EXTENT_LIST) fails the command."""
        n = len(starts)
        r = np.searchsorted(self._bases, starts, side="right") - 1
        rr = np.maximum(r, 0)
        last = self._lasts[rr]                        # the region's last byte (u64, no overflow)
        inside = (r >= 0) & (lengths > 0) & (starts <= last)
        inside &= lengths - np.uint64(1) <= last - np.where(inside, starts, last)
        bs = self._blocks[rr]
        aligned = ((starts - self._bases[0]) % bs == 0) & (lengths % bs == 0)
        first_pa = int(np.argmin(inside)) if not inside.all() else n
        first_al = int(np.argmin(aligned)) if not aligned.all() else n
        dup = first_overlap(starts, lengths)
        first_ov = n if dup is None else dup
        i = min(first_pa, first_al, first_ov)
        if i == n:
            return
        if i == first_pa:
            raise MailboxError(f"extent {i} at {int(starts[i]):#x} is not inside one DC region", ReturnCode.INVALID_PA)
        if i == first_al:
            raise MailboxError(f"extent {i} at {int(starts[i]):#x} is not aligned to the region block size",
                               ReturnCode.INVALID_EXTENT_LIST)
        raise MailboxError(f"extent {i} at {int(starts[i]):#x} overlaps an earlier extent of the list",
                           ReturnCode.INVALID_EXTENT_LIST)

    def add_response(self, head: int, extents: ExtentsLike = (), *, more: bool = False) -> None:
        """Add DC Response (4802h): the head accepts ``extents`` of its oldest pending offer (§5.3).

        ``more=True`` says further payloads of the same response follow (the More flag): the
        device keeps the extents and answers the joined list when the last payload (More
        clear) arrives.  An empty list rejects the whole offer.  Each accepted range must lie inside one extent
        of the oldest offer and not overlap accepted capacity; with ``require_offer_order`` the
        ranges must follow the offer order.  Whatever the offer held that the response does not
        list returns to free capacity (unless another head holds it).  Raises MailboxError with
        the return code, and changes nothing, when the response is refused.
        """
        h = self._head(head)
        starts, lengths = _pairs(extents)
        entry = {"op": "add_response", "head": int(head), "extents": _ext_list((starts, lengths))}
        if more:
            entry["more"] = True
            h.response.append((starts, lengths))
            entry["status"] = "SUCCESS"
            self._record(entry)
            return
        if h.response:
            starts = np.concatenate([p[0] for p in h.response] + [starts])
            lengths = np.concatenate([p[1] for p in h.response] + [lengths])
            h.response.clear()
        try:
            self._add_response(int(head), h, starts, lengths)
        except MailboxError as e:
            entry["status"] = ReturnCode(e.code).name
            self._record(entry)
            raise
        entry["status"] = "SUCCESS"
        self._record(entry)

    def _add_response(self, hid: int, h: _Head, starts: np.ndarray, lengths: np.ndarray) -> None:
        n = len(starts)
        if n == 0:
            if h.offers:
                self._retire(hid, h, h.offers[0], starts, lengths, np.zeros(0, np.uint32))
            return
        if n + h.tracked() > self.max_extents:          # QEMU counts pending twice here
            raise MailboxError(f"{n} extents + {h.tracked()} tracked exceed {self.max_extents}",
                               ReturnCode.RESOURCES_EXHAUSTED)
        self._malformed(starts, lengths)
        if not h.offers:
            raise MailboxError("no offer is pending", ReturnCode.INVALID_PA)
        offer = h.offers[0]
        om = ExtentMap.from_arrays(offer.extents["start"], offer.extents["length"],
                                   labels=np.arange(len(offer.extents), dtype=np.uint32))
        inside = om.classify_many(starts, lengths) == ExtentMap.WITHIN
        if not inside.all():
            i = int(np.argmax(~inside))
            raise MailboxError(f"extent {i} at {int(starts[i]):#x} is not inside an extent of the oldest offer",
                               ReturnCode.INVALID_PA)
        clash = h.accepted.classify_many(starts, lengths) != ExtentMap.FREE
        if clash.any():
            i = int(np.argmax(clash))
            raise MailboxError(f"extent {i} at {int(starts[i]):#x} overlaps accepted capacity", ReturnCode.INVALID_PA)
        pos = om.labels_many(starts)
        if self.require_offer_order and (np.diff(pos) < 0).any():
            i = int(np.argmax(np.diff(pos) < 0)) + 1
            raise MailboxError(f"extent {i} at {int(starts[i]):#x} is listed out of offer order",
                               ReturnCode.INVALID_EXTENT_LIST)
        labels = h.pending.labels_many(starts).astype(np.uint32)
        self._retire(hid, h, offer, starts, lengths, labels)

    def _retire(self, hid: int, h: _Head, offer: Offer, starts: np.ndarray, lengths: np.ndarray,
                labels: np.ndarray) -> None:
        """Close the oldest offer: accept the listed ranges, free the rest."""
        os_, ol = offer.extents["start"], offer.extents["length"]
        h.pending.remove_many(os_, ol)
        self._holders.remove_many(np.full(len(os_), hid, np.uint64), os_, ol)
        if len(starts):
            h.accepted.insert_many(starts, lengths, labels=labels)
            self._holders.add_many(np.full(len(starts), hid, np.uint64), starts, lengths)
            self._count_tags(h, starts, lengths, labels, 1)
            h.generation += 1
        h.offers.popleft()

    def release(self, head: int, extents: ExtentsLike) -> None:
        """Release DC (4803h): the head gives back accepted ranges (§5.3).

        A range may be part of an extent (the rest stays accepted, split in up to two) or span
        several.  Count 0 is INVALID_INPUT; a range not fully accepted is INVALID_PA; more
        extents than ``max_extents`` after the splits is RESOURCES_EXHAUSTED.  Released bytes
        nobody else holds become free (and are sanitized if the region or the release asked).
        """
        h = self._head(head)
        starts, lengths = _pairs(extents)
        entry = {"op": "release", "head": int(head), "extents": _ext_list((starts, lengths))}
        try:
            if not len(starts):
                raise MailboxError("a Release DC with no extents", ReturnCode.INVALID_INPUT)
            self._malformed(starts, lengths)
            self._release_dry_run(h, starts, lengths)
        except MailboxError as e:
            entry["status"] = ReturnCode(e.code).name
            self._record(entry)
            raise
        self._take_back(int(head), starts, lengths, False)
        entry["status"] = "SUCCESS"
        self._record(entry)

    def release_each(self, head: int, extents: ExtentsLike) -> List[ReturnCode]:
        """One Release DC (4803h) per extent, in order, as a host's teardown sends them: the
        same result and log as that many :meth:`release` calls, each with one extent.

        When every extent is a whole accepted extent (the teardown of a tag group), each
        command succeeds whatever the others do (it removes one extent: nothing to split,
        nothing unbacked), so they are applied in one batch.  Otherwise they run one by one.
        """
        h = self._head(head)
        starts, lengths = _pairs(extents)
        if not len(starts):
            return []
        m, g = h.accepted, np.uint64(_GRANULE)
        batch = bool((lengths > 0).all() and not ((starts | lengths) % g).any()
                     and (lengths - np.uint64(1) <= ~starts).all())           # valid, no wrap
        batch = batch and bool((m.classify_many(starts, lengths) == ExtentMap.WITHIN).all())
        if batch:                                     # ... and each range is a whole extent, once
            rank = m.lookup_many(starts)
            ends = starts + lengths                       # 0 for an extent ending at 2**64
            batch = bool(((starts == 0) | (m.lookup_many(starts - g) != rank)).all()
                         and ((ends == 0) | (m.lookup_many(ends) != rank)).all()
                         and len(np.unique(rank)) == len(rank))
        if not batch:
            codes = []
            for s, n in zip(starts.tolist(), lengths.tolist()):
                try:
                    self.release(head, [(s, n)])
                    codes.append(ReturnCode.SUCCESS)
                except MailboxError as e:
                    codes.append(ReturnCode(e.code))
            return codes
        for s, n in zip(starts.tolist(), lengths.tolist()):
            self._record({"op": "release", "head": int(head), "extents": [[s, n]], "status": "SUCCESS"})
        self._take_back(int(head), starts, lengths, False)
        h.generation += len(starts) - 1                   # one bump per command
        return [ReturnCode.SUCCESS] * len(starts)

    def _release_dry_run(self, h: _Head, starts: np.ndarray, lengths: np.ndarray) -> None:
        """QEMU ``cxl_dc_extent_release_dry_run`` on a copy of the extents the entries touch:
        entry by entry, a range not fully accepted is INVALID_PA; then extent by extent, the
        extent goes (-1) and the remainders left at its ends come back (+1 each), and a running
        count above ``max_extents`` is RESOURCES_EXHAUSTED."""
        kinds = h.accepted.classify_many(starts, lengths)
        backed = (kinds == ExtentMap.WITHIN) | (kinds == ExtentMap.COVERED)
        lo = int(starts.min())
        hi = int((starts.astype(object) + lengths).max())
        trial = ExtentMap(_GRANULE)
        trial.insert_many(*h.accepted.overlapping(lo, hi - lo)[:2])
        count = h.tracked()
        for i, (s, n) in enumerate(zip(starts.tolist(), lengths.tolist())):
            if not backed[i]:
                raise MailboxError(f"extent {i} at {s:#x} is not accepted capacity", ReturnCode.INVALID_PA)
            o = trial.overlapping(s, n)
            delta = np.full(len(o.starts), -1, np.int64)
            delta[0] += int(o.starts[0]) < s                                  # head remainder
            delta[-1] += int(o.starts[-1]) + int(o.lengths[-1]) > s + n       # tail remainder
            running = count + np.cumsum(delta)
            if (running > self.max_extents).any():
                raise MailboxError(f"extent {i} at {s:#x}: the release would split extents past the "
                                   f"limit of {self.max_extents}", ReturnCode.RESOURCES_EXHAUSTED)
            count = int(running[-1])
            trial.remove(s, n)

    def get_dc_config(self, head: int, region_count: int = 8, start_region: int = 0) -> R.GetDcConfigOut:
        """Get DC Configuration (4800h) for a head (§2.1)."""
        h = self._head(head)
        entry = {"op": "get_dc_config", "head": int(head), "region_count": _plain(region_count),
                 "start_region": _plain(start_region)}
        if not 0 <= start_region < len(self.regions):
            self._record({**entry, "status": "INVALID_INPUT"})
            raise MailboxError(f"start region {start_region} is not a region", ReturnCode.INVALID_INPUT)
        regs = [r.record() for r in self.regions[start_region:start_region + region_count]]
        self._record({**entry, "status": "SUCCESS", "returned": len(regs)})
        return R.GetDcConfigOut(len(self.regions), regs, self.max_extents,
                                max(0, self.max_extents - h.tracked()), self.max_tags, self.max_tags)

    def get_extent_list(self, head: int, count: Optional[int] = None, start_index: int = 0) -> R.GetDcExtentListOut:
        """Get DC Extent List (4801h): the head's accepted extents from ``start_index`` (§3.5),
        at most ``count`` (default: as many as fit one mailbox payload), with the generation."""
        h = self._head(head)
        total = len(h.accepted)
        entry = {"op": "get_extent_list", "head": int(head), "count": _plain(count),
                 "start_index": _plain(start_index)}
        if start_index > total:
            self._record({**entry, "status": "INVALID_INPUT"})
            raise MailboxError(f"start index {start_index} is past {total} extents", ReturnCode.INVALID_INPUT)
        room = (MAILBOX_PAYLOAD_SIZE - 16) // 40
        k = min(room if count is None else min(count, room), total - start_index)
        if k:
            s, n, _, lab = _slice(h.accepted, start_index, k)
            ext = self._records.extents(s, n, lab)
        else:
            ext = np.zeros(0, EXTENT_DTYPE)
        self._record({**entry, "status": "SUCCESS", "returned": int(k), "total": total,
                      "generation": h.generation & 0xFFFFFFFF})
        return R.GetDcExtentListOut(total, h.generation & 0xFFFFFFFF, ext)

    def mailbox(self, head: int, opcode: int, payload: bytes = b"") -> Tuple[ReturnCode, bytes]:
        """One mailbox command on the wire: (return code, output payload).

        Handles 4800h–4803h; a malformed payload is INVALID_PAYLOAD_LENGTH or INVALID_INPUT,
        an unknown opcode UNSUPPORTED.  Never raises for what a device would answer.
        """
        self._head(head)
        code, out = self._dispatch(head, opcode, bytes(payload))
        if code is not None:
            return code, out
        # Refused before any command ran: logged here (the commands log themselves).
        code = ReturnCode.INVALID_PAYLOAD_LENGTH if opcode in _OPCODES else ReturnCode.UNSUPPORTED
        self._record({"op": "mailbox", "head": int(head), "opcode": int(opcode), "payload": bytes(payload).hex(),
                      "status": code.name})
        return code, b""

    def _dispatch(self, head: int, opcode: int, payload: bytes) -> Tuple[Optional[ReturnCode], bytes]:
        """Run a command from its payload: (code, output), or (None, b"") when the payload is
        malformed or the opcode unknown."""
        try:
            if opcode == R.Opcode.GET_DC_CONFIG and len(payload) == 2:
                req = R.unpack_get_dc_config_in(payload, strict=False)   # QEMU clips the count
                return ReturnCode.SUCCESS, R.pack_get_dc_config_out(
                    self.get_dc_config(head, req.region_count, req.start_region))
            if opcode == R.Opcode.GET_DC_EXTENT_LIST and len(payload) == 8:
                req = R.unpack_get_dc_extent_list_in(payload)
                return ReturnCode.SUCCESS, R.pack_get_dc_extent_list_out(
                    self.get_extent_list(head, req.count, req.start_index))
            if opcode in (R.Opcode.ADD_DC_RESPONSE, R.Opcode.RELEASE_DC):
                try:
                    lst = R.unpack_updated_extent_list_array(payload, strict=False)
                except R.RecordError:
                    return None, b""
                if opcode == R.Opcode.ADD_DC_RESPONSE:
                    self.add_response(head, lst.extents, more=lst.more)
                else:
                    self.release(head, lst.extents)
                return ReturnCode.SUCCESS, b""
        except MailboxError as e:
            return ReturnCode(e.code), b""
        except R.RecordError:                        # a reserved or impossible field value
            return ReturnCode.INVALID_INPUT, b""
        return None, b""

    def fm_mailbox(self, opcode: int, payload: bytes) -> Tuple[ReturnCode, bytes]:
        """An FM-API command on the wire (§3.6): Initiate DC Add (5604h) or Initiate DC Release
        (5605h), applied as :meth:`add_capacity` / :meth:`release_capacity` (extents at their
        absolute DPA; the header's tag, length, policy and flags).  A payload that does not
        unpack is INVALID_PAYLOAD_LENGTH (truncated) or INVALID_INPUT; a refused request is
        INVALID_INPUT (its text is in the log); another opcode is UNSUPPORTED."""
        try:
            if opcode == R.Opcode.FM_INITIATE_DC_ADD:
                p = R.unpack_fm_dc_add(payload)
                self.add_capacity(p.host_id, p.region, [(e.start, e.length) for e in p.extents],
                                  policy=p.selection_policy, length=p.length or None, tag=p.tag)
            elif opcode == R.Opcode.FM_INITIATE_DC_RELEASE:
                p = R.unpack_fm_dc_release(payload)
                self.release_capacity(p.host_id, p.region, [(e.start, e.length) for e in p.extents],
                                      policy=p.removal_policy, tag=p.tag, forced=p.forced_removal,
                                      sanitize=p.sanitize_on_release)
            else:
                code = ReturnCode.UNSUPPORTED
        except RequestError:                          # logged by the request itself
            return ReturnCode.INVALID_INPUT, b""
        except R.RecordError as e:
            code = ReturnCode.INVALID_PAYLOAD_LENGTH if isinstance(e, R.RecordTruncatedError) \
                else ReturnCode.INVALID_INPUT
        else:
            if opcode in (R.Opcode.FM_INITIATE_DC_ADD, R.Opcode.FM_INITIATE_DC_RELEASE):
                return ReturnCode.SUCCESS, b""
        self._record({"op": "fm_mailbox", "opcode": int(opcode), "payload": bytes(payload).hex(),
                      "status": code.name})
        return code, b""

    # ------------------------------------------------------------------ events

    def take_events(self, head: int, limit: Optional[int] = None) -> np.ndarray:
        """Get and clear up to ``limit`` DC event records of a head (all if None), oldest first,
        as an array of :data:`~dcdmap.cxl.DC_EVENT_DTYPE`."""
        h = self._head(head)
        want = h.queued if limit is None else min(limit, h.queued)
        parts, got = [], 0
        while got < want:
            chunk = h.events[0]
            take = min(len(chunk), want - got)
            parts.append(chunk[:take])
            if take == len(chunk):
                h.events.popleft()
            else:
                h.events[0] = chunk[take:]
            got += take
        h.queued -= got
        self._record({"op": "take_events", "head": int(head), "count": got})
        return np.concatenate(parts) if parts else np.zeros(0, DC_EVENT_DTYPE)

    def events_view(self, head: int) -> List[Dict[str, Any]]:
        """The queued events of a head as dicts (type, more, start, length, tag, seq), unread."""
        h = self._head(head)
        out = []
        for chunk in h.events:
            for ev in chunk:
                e = ev["extent"]
                out.append({"type": DcEventType(int(ev["event_type"])).name, "more": bool(ev["flags"] & 1),
                            "start": int(e["start"]), "length": int(e["length"]),
                            "tag": str(uuid.UUID(bytes=bytes(e["tag"]))), "seq": int(e["shared_seq"])})
        return out

    # ------------------------------------------------------------------ state

    def pending_offers(self, head: int) -> List[Offer]:
        """A head's pending offers, oldest first."""
        return list(self._head(head).offers)

    def accepted(self, head: int) -> np.ndarray:
        """All extents a head has accepted, in DPA order, as EXTENT_DTYPE records."""
        h = self._head(head)
        s, n, _, lab = h.accepted.to_arrays()
        return self._records.extents(s, n, lab)

    def generation(self, head: int) -> int:
        """The head's extent-list generation number (bumped on every accept and release)."""
        return self._head(head).generation

    def event_overflow(self, head: int) -> int:
        """Event records dropped because the head's event log was full."""
        return self._head(head).overflow

    def holders(self, dpa: int) -> List[int]:
        """The heads holding ``dpa`` (pending or accepted)."""
        mask = self._holders.holders(dpa)
        return [i for i in range(self.nheads) if mask >> i & 1]

    def capacity(self, region: Optional[int] = None) -> Capacity:
        """Bytes free, pending and accepted in one region or (None) in all of them."""
        regs = range(len(self.regions)) if region is None else [region]
        total = free = pending = accepted = 0
        for r in regs:
            reg = self._region(r)
            total += reg.length
            free += int(self._holders.gaps(reg.base, reg.end).lengths.sum())
            acc = ExtentMap(_GRANULE)
            for h in self._heads:
                if len(h.accepted):
                    s, n, _, _ = h.accepted.overlapping(reg.base, reg.length)
                    acc.remove_many(s, n)
                    acc.insert_many(s, n)
            accepted += acc.mapped_bytes
        pending = total - free - accepted
        return Capacity(total, free, pending, accepted)

    def head_capacity(self, head: int) -> Tuple[int, int]:
        """(pending, accepted) bytes of one head."""
        h = self._head(head)
        return h.pending.mapped_bytes, h.accepted.mapped_bytes

    def check_invariants(self) -> None:
        """Raise AssertionError unless the state is consistent: each head's pending and accepted
        maps are disjoint, inside the regions, and their union over heads is exactly what the
        holders index says each head holds; pending maps equal the pending offers."""
        rebuilt = SharingIndex(_GRANULE)
        for i, h in enumerate(self._heads):
            h.accepted.check_invariants()
            h.pending.check_invariants()
            for m in (h.accepted, h.pending):
                if len(m):
                    s, n, _, _ = m.to_arrays()
                    rebuilt.add_many(np.full(len(s), i, np.uint64), s, n)
                    r = np.searchsorted(self._bases, s, side="right") - 1
                    assert (r >= 0).all(), "an extent below the first region"
                    ends = np.array([self.regions[k].end for k in r], dtype=object)
                    assert ((s.astype(object) + n.astype(object)) <= ends).all(), "an extent outside its region"
            if len(h.pending) and len(h.accepted):
                s, n, _, _ = h.pending.to_arrays()
                assert (h.accepted.classify_many(s, n) == ExtentMap.FREE).all(), "pending overlaps accepted"
            offered = sum(o.length for o in h.offers)
            assert offered == h.pending.mapped_bytes, "pending map differs from the offers"
            assert h.queued == sum(len(c) for c in h.events)
        a, b = rebuilt.to_arrays(), self._holders.to_arrays()
        assert all(np.array_equal(x, y) for x, y in zip(a, b)), "holders index differs from the heads"

    # ------------------------------------------------------------------ log and replay

    def write_log(self, out: IO[str]) -> None:
        """Write the event log as JSON lines (one operation per line)."""
        for entry in self.log:
            out.write(json.dumps(entry, separators=(",", ":")) + "\n")

    @classmethod
    def replay(cls, lines: Iterable[str]) -> "Device":
        """Rebuild a device by replaying a JSON-lines log; every operation must give the same
        result as logged.  Raises CorruptDataError naming the line that does not parse or
        does not replay the same."""
        dev: Optional[Device] = None
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                e = json.loads(line)
                op = e["op"]
            except (ValueError, KeyError, TypeError) as err:
                raise CorruptDataError(f"log line {lineno}: not a log entry ({err})") from None
            try:
                if op == "device":
                    if dev is not None or e.get("version") != _LOG_VERSION:
                        raise CorruptDataError("a second device entry or an unknown log version")
                    dev = cls.from_config(e["config"])
                    continue
                if dev is None:
                    raise CorruptDataError("the log does not start with a device entry")
                got = dev._replay_one(e)
            except (CorruptDataError, ConfigurationError, KeyError, TypeError, ValueError) as err:
                raise CorruptDataError(f"log line {lineno}: {err}") from None
            if got != e:
                raise CorruptDataError(f"log line {lineno}: replaying {op} gave {got}, the log has {e}")
        if dev is None:
            raise CorruptDataError("empty log")
        return dev

    def _replay_one(self, e: Dict[str, Any]) -> Dict[str, Any]:
        op = e["op"]
        try:
            if op == "add_capacity":
                self.add_capacity(e["head"], e["region"], e["request"], policy=e["policy"],
                                  length=e["length"], tag=_logged_tag(e["tag"]))
            elif op == "release_capacity":
                self.release_capacity(e["head"], e["region"], e["request"], policy=e["policy"],
                                      tag=_logged_tag(e["tag"]), forced=e["forced"], sanitize=e["sanitize"])
            elif op == "add_response":
                self.add_response(e["head"], e["extents"], more=e.get("more", False))
            elif op == "release":
                self.release(e["head"], e["extents"])
            elif op == "take_events":
                self.take_events(e["head"], e["count"])
            elif op == "get_dc_config":
                self.get_dc_config(e["head"], e["region_count"], e["start_region"])
            elif op == "get_extent_list":
                self.get_extent_list(e["head"], e["count"], e["start_index"])
            elif op == "mailbox":
                self.mailbox(e["head"], e["opcode"], bytes.fromhex(e["payload"]))
            elif op == "fm_mailbox":
                self.fm_mailbox(e["opcode"], bytes.fromhex(e["payload"]))
            else:
                raise CorruptDataError(f"unknown operation {op!r}")
        except (MailboxError, RequestError):
            pass
        return self.log[-1]

    def __repr__(self) -> str:
        return f"Device({len(self.regions)} regions, {self.nheads} heads, seed={self.seed})"


def _policy(kind: Any, value: Any) -> Any:
    if isinstance(value, str):
        key = value.replace("-", "_").upper()
        if key in kind.__members__:
            return kind[key]
    else:
        try:
            return kind(value)
        except ValueError:
            pass
    raise RequestError(f"{value!r} is not a {kind.__name__}")


def _plain(value: Any) -> Any:
    """A request argument as JSON: enum members by name, numpy ints as ints."""
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, np.integer):
        return int(value)
    return value if isinstance(value, (int, str, type(None))) else repr(value)


def _logged_tag(text: str) -> Any:
    return None if text == "None" else text


def _ext_list(extents: Any) -> List[List[int]]:
    if isinstance(extents, tuple) and len(extents) == 2 and isinstance(extents[0], np.ndarray):
        s, n = extents
    else:
        try:
            s, n = _pairs(extents)
        except Exception:
            try:        # values _pairs refuses (negative, past 2**64): log them as given
                return [[int(a), int(b)] for a, b in extents]
            except Exception:
                return []
    return [[int(a), int(b)] for a, b in zip(s.tolist(), n.tolist())]


def _ext_rows(ext: np.ndarray) -> List[List[Any]]:
    names: Dict[bytes, str] = {}                 # an offer has one tag: one UUID per tag
    tags = [names.get(t) or names.setdefault(t, str(uuid.UUID(bytes=t))) for t in map(bytes, ext["tag"])]
    return [[int(s), int(n), t, int(q)] for s, n, t, q in
            zip(ext["start"].tolist(), ext["length"].tolist(), tags, ext["shared_seq"].tolist())]


def _pieces(m: ExtentMap, starts: np.ndarray, lengths: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ranges cut where the extents of ``m`` under them end: (starts, lengths, labels),
    one piece per extent a range meets (one Python step per range)."""
    parts = []
    for s, n in zip(starts.tolist(), lengths.tolist()):
        o = m.overlapping(s, n)
        lo = np.maximum(o.starts, np.uint64(s))
        hi = np.minimum(o.starts + o.lengths - np.uint64(1), np.uint64(s + n - 1))
        parts.append((lo, hi - lo + np.uint64(1), o.labels))
    if not parts:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.uint32)
    return tuple(np.concatenate(c) for c in zip(*parts))  # type: ignore[return-value]


def _slice(m: ExtentMap, start: int, k: int):
    """Extents start .. start+k-1 of a map in address order."""
    first = m[start]
    last = m[start + k - 1]
    return m.overlapping(first.start, last.start + last.length - first.start)
