"""Plain-Python reference models for the reconstruction engine (tag views, the cross-host
check, the sharing index, composition).

Deliberately naive: lists of tuples, linear scans, one address (or one granule) at a time.
Nothing here uses numpy or the engine, so that each model is easy to check by eye against
the reference document (docs: /work/shared/reference/cxl-dcd.md §1, §4.1-4.3, §6):

* a tag view places a host's extents by sequence number 0..n-1 (shareable capacity) or in
  arrival order (non-shareable); extent k sits at logical offset = the sum of the lengths of
  the extents placed before it (§4.1 steps 2 and 6, §4.3, §6.3);
* an interleaved view (famfs, §6.1) resolves logical offset o as
  chunk = o // chunk_size, strip = chunk % nstrips, stripe = chunk // nstrips,
  addr = strips[strip] + stripe * chunk_size + o % chunk_size;
* the cross-host check walks the logical offsets one step at a time and reports the first
  offset where the hosts' media addresses differ, or where some host reaches no media;
* the sharing index keeps one holder bitmask per granule;
* a composition applies the maps in turn, per address.
"""

from __future__ import annotations

SPACE = 1 << 64


# ----------------------------------------------------------------------------- plain maps

class PlainMap:
    """A map of disjoint ``[start, start + length) -> target`` ranges with labels: a list of
    tuples, searched linearly.  Used as the reference of an ExtentMap's translation."""

    def __init__(self, extents=()):
        # (start, length, target, label)
        self.extents = []
        for e in extents:
            self.add(*e)

    def add(self, start, length, target=None, label=0):
        assert length > 0
        for s, ln, _, _ in self.extents:
            assert start + length <= s or s + ln <= start, "PlainMap: overlapping extents"
        self.extents.append((start, length, start if target is None else target, label))

    def find(self, addr):
        """The (start, length, target, label) holding ``addr``, or None."""
        for e in self.extents:
            if e[0] <= addr < e[0] + e[1]:
                return e
        return None

    def translate(self, addr):
        """target + (addr - start), or None when ``addr`` is not mapped."""
        e = self.find(addr)
        if e is None:
            return None
        return e[2] + (addr - e[0])

    def label(self, addr):
        e = self.find(addr)
        return None if e is None else e[3]

    def __contains__(self, addr):
        return self.find(addr) is not None

    def remove(self, start, length):
        """Unmap ``[start, start + length)``, cutting extents that straddle its ends."""
        out = []
        end = start + length
        for s, ln, t, lab in self.extents:
            e = s + ln
            if e <= start or end <= s:
                out.append((s, ln, t, lab))
                continue
            if s < start:
                out.append((s, start - s, t, lab))
            if end < e:
                out.append((end, e - end, t + (end - s), lab))
        self.extents = out

    @classmethod
    def of(cls, m):
        """A PlainMap with the extents of an ExtentMap (iterated as tuples)."""
        return cls(tuple(e) for e in m)


# ----------------------------------------------------------------------------- tag views

class RefSequenceProblem(Exception):
    """The reference's verdict that sequence numbers are not exactly 0..n-1."""


def placement_order(n, seqs=None):
    """The caller's extent indices in view order: by sequence number (which must be exactly
    0..n-1), or arrival order when ``seqs`` is None."""
    if seqs is None:
        return list(range(n))
    if sorted(seqs) != list(range(n)):
        raise RefSequenceProblem(f"{list(seqs)} is not a permutation of 0..{n - 1}")
    order = [None] * n
    for i, q in enumerate(seqs):
        order[q] = i
    return order


class RefTagView:
    """One host's view: logical offset <-> host address, by linear search."""

    def __init__(self, starts, lengths, seqs=None, chunk_size=None):
        starts = [int(x) for x in starts]
        lengths = [int(x) for x in lengths]
        n = len(starts)
        assert n == len(lengths) and n > 0
        order = placement_order(n, None if seqs is None else [int(q) for q in seqs])
        # (host start, length) in logical order
        self.placed = [(starts[i], lengths[i]) for i in order]
        self.chunk_size = chunk_size
        if chunk_size is not None:
            assert all(ln == lengths[0] for ln in lengths)
            assert lengths[0] % chunk_size == 0
        self.size = sum(lengths)

    # -- forward

    def translate(self, o):
        """The host address of logical offset ``o``, or None past the end."""
        if o < 0 or o >= self.size:
            return None
        if self.chunk_size is not None:
            cs = self.chunk_size
            nstrips = len(self.placed)
            chunk = o // cs
            strip = chunk % nstrips
            stripe = chunk // nstrips
            return self.placed[strip][0] + stripe * cs + o % cs
        base = 0
        for host, ln in self.placed:
            if base <= o < base + ln:
                return host + (o - base)
            base += ln
        raise AssertionError("unreachable")

    # -- backward

    def reverse(self, addr):
        """The logical offset of host address ``addr``, or None when the view does not hold it.
        Found by searching the forward direction (so it does not share its formula)."""
        for logical, host, ln in self.segments():
            if host <= addr < host + ln:
                return logical + (addr - host)
        return None

    def segments(self):
        """(logical start, host start, length) in logical order; chunk by chunk when
        interleaved."""
        out = []
        if self.chunk_size is not None:
            cs = self.chunk_size
            for c in range(self.size // cs):
                out.append((c * cs, self.translate(c * cs), cs))
            return out
        base = 0
        for host, ln in self.placed:
            out.append((base, host, ln))
            base += ln
        return out


# ----------------------------------------------------------------------------- cross-host check

def media_at(view, media_map, offset):
    """The media address host ``view`` reaches at logical ``offset`` through ``media_map``
    (a PlainMap host address -> media, or None: host addresses are media), or None."""
    host = view.translate(offset)
    if host is None:
        return None
    if media_map is None:
        return host
    return media_map.translate(host)


def first_difference(views, media_maps=None, step=1, end=None):
    """Walk logical offsets 0, step, 2*step, ... up to the largest view's size (or ``end``)
    and return (offset, tuple of per-host media addresses) at the first offset where some host
    reaches no media or the hosts reach different media; None when they all agree.

    ``step`` must divide every extent boundary (1 = byte by byte; the granule when every
    start, length and target is a multiple of it)."""
    if media_maps is None:
        media_maps = [None] * len(views)
    if end is None:
        end = max(v.size for v in views)
    for o in range(0, end, step):
        media = tuple(media_at(v, m, o) for v, m in zip(views, media_maps))
        if any(x is None for x in media) or len(set(media)) != 1:
            return o, media
    return None


# ----------------------------------------------------------------------------- sharing index

class RefSharing:
    """Which hosts hold each granule of the window ``[base, base + space)``: one bitmask per
    granule (nothing outside the window is ever held)."""

    def __init__(self, space, granule=64, base=0):
        assert space % granule == 0 and base % granule == 0
        self.granule = granule
        self.space = space
        self.base = base
        self.masks = [0] * (space // granule)

    def _granules(self, start, length):
        assert self.base <= start and start + length <= self.base + self.space
        return range((start - self.base) // self.granule, (start + length - self.base) // self.granule)

    def add(self, host, start, length):
        for g in self._granules(start, length):
            self.masks[g] |= 1 << host

    def remove(self, host, start, length):
        for g in self._granules(start, length):
            self.masks[g] &= ~(1 << host)

    def clear(self):
        self.masks = [0] * len(self.masks)

    def holders(self, addr):
        if not self.base <= addr < self.base + self.space:
            return 0
        return self.masks[(addr - self.base) // self.granule]

    def runs(self):
        """Maximal runs of equal non-zero masks: (start, length, mask) in address order."""
        out = []
        for g, mask in enumerate(self.masks):
            if mask == 0:
                continue
            start = self.base + g * self.granule
            if out and out[-1][2] == mask and out[-1][0] + out[-1][1] == start:
                s, ln, _ = out[-1]
                out[-1] = (s, ln + self.granule, mask)
            else:
                out.append((start, self.granule, mask))
        return out

    def held_by(self, host):
        """Merged (start, length) ranges that ``host`` holds."""
        return self.held_by_all().get(host, [])

    def held_by_all(self):
        """{host: merged (start, length) ranges it holds}, for every host holding something."""
        out = {}
        for g, mask in enumerate(self.masks):
            start = self.base + g * self.granule
            while mask:
                low = mask & -mask                  # one holder at a time
                mask ^= low
                ranges = out.setdefault(low.bit_length() - 1, [])
                if ranges and ranges[-1][0] + ranges[-1][1] == start:
                    ranges[-1] = (ranges[-1][0], ranges[-1][1] + self.granule)
                else:
                    ranges.append((start, self.granule))
        return out

    def coverage(self):
        """c[k] = bytes held by exactly k hosts, k = 0..64 (c[0] = 0: holes are not counted)."""
        c = [0] * 65
        for mask in self.masks:
            if mask:
                c[bin(mask).count("1")] += self.granule
        return c


# ----------------------------------------------------------------------------- composition

def chain_translate(maps, addr):
    """Apply the PlainMaps in turn: (result, None), or (None, k) when stage k does not map
    the address it is given."""
    for k, m in enumerate(maps):
        addr = m.translate(addr)
        if addr is None:
            return None, k
    return addr, None


def compose_pieces(maps, points, step):
    """The extents of compose(*maps) as (start, length, target, label) tuples: maximal runs of
    ``points`` (increasing, ``step`` apart, covering the domain of stage 0) over which the
    address is mapped all the way and no stage changes extent.  Labels from stage 0."""
    out = []
    prev = None             # (x, the extents met at each stage, result) of the last point
    for x in points:
        path, addr = [], x
        for m in maps:
            e = m.find(addr)
            if e is None:
                path = None
                break
            path.append(e)
            addr = e[2] + (addr - e[0])
        if path is None:
            prev = None
            continue
        if prev is not None and prev[0] + step == x and prev[1] == path and prev[2] + step == addr:
            s, ln, t, lab = out[-1]
            out[-1] = (s, ln + step, t, lab)
        else:
            out.append((x, step, addr, path[0][3]))
        prev = (x, path, addr)
    return out


def lowest_bit(x):
    return x & -x


def compose_granule(maps, granules, points, step):
    """The granule compose(*maps) reports: stage by stage, the smaller of the running granule
    and the next map's, lowered to the lowest set bit of any piece start or length."""
    g = granules[0]
    for k in range(1, len(maps)):
        g = min(g, granules[k])
        bits = 0
        for s, ln, _, _ in compose_pieces(maps[:k + 1], points, step):
            bits |= s | ln
        if bits and lowest_bit(bits) < g:
            g = lowest_bit(bits)
    return g


def compose_hole(maps, points):
    """For compose(..., strict=True): the first stage k >= 1 and the address in its domain
    that it does not map although it is the image (through stages 0..k-1) of one of
    ``points`` (which must list the domain of stage 0 in increasing order, at a step that
    divides every boundary); None when every image is mapped all the way."""
    for k in range(1, len(maps)):
        for x in points:
            y, bad = chain_translate(maps[:k], x)
            if y is None:
                continue          # not in the domain of the first k stages
            if maps[k].translate(y) is None:
                return k, y
    return None
