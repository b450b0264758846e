"""The seeded workload of dcdmap's benchmarks: one definition, shared by ``dcdmap bench``,
``benchmarks/compare_peers.py``, the pytest-benchmark suites and ``scale_1e8.py`` (which
reach it through ``benchmarks/data.py``).

The workload (the issue's spec):

* extents with 64-byte-aligned starts and lengths; lengths 64 B .. 2 MiB, drawn
  log-uniformly in granules (``floor(exp(U(0, ln 32769)))`` granules, clipped to 1 .. 32768,
  mean ~200 KiB);
* gaps between neighbours 0 .. 256 KiB (uniform in granules, both ends included, mean
  128 KiB), so about 39 % of a uniform query's addresses fall in a gap;
* 48-bit addresses: the first extent starts at ``BASE = 2**46``; 10^8 extents span about
  2**45 bytes, so every address stays below 2**48;
* targets are packed: extent k translates to ``TARGET_BASE + sum of the lengths before k``
  (a device-physical address space with no holes), labels are uniform in 0 .. 15;
* queries are uniform over ``[first start, last end)`` (byte addresses, not aligned).

Everything is a function of ``(n, seed)`` (and ``chunk`` for the chunked generator), through
``numpy.random.default_rng``, so two runs, or two scripts, see the same extents::

    >>> ext = make_extents(1000)
    >>> len(ext), BASE <= int(ext.starts[0]) < int(ext.ends[-1]) < 2**48
    (1000, True)
    >>> bool((ext.starts % GRANULE == 0).all() and (ext.lengths % GRANULE == 0).all())
    True
    >>> q = uniform_queries(ext, 5)
    >>> bool((reference_translate(ext, q) == reference_translate(make_extents(1000), q)).all())
    True
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Optional

import numpy as np

GRANULE = 64
MAX_LEN_GRANULES = (2 << 20) // GRANULE      # 2 MiB
MAX_GAP_GRANULES = (256 << 10) // GRANULE    # 256 KiB
BASE = 1 << 46
TARGET_BASE = 1 << 40
NUM_LABELS = 16
DEFAULT_SEED = 20240601
MISSING = np.uint64(0xFFFFFFFFFFFFFFFF)      # what an unmapped address translates to


class Extents(NamedTuple):
    """Extents as arrays in address order; ``ends`` is exclusive (start + length)."""

    starts: np.ndarray   # uint64
    lengths: np.ndarray  # uint64
    targets: np.ndarray  # uint64
    labels: np.ndarray   # uint32

    @property
    def ends(self) -> np.ndarray:
        return self.starts + self.lengths

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.starts.shape[0])

    def take(self, idx) -> "Extents":
        return Extents(self.starts[idx], self.lengths[idx], self.targets[idx], self.labels[idx])


def _draw(rng: np.random.Generator, n: int, start: int, target: int) -> tuple[Extents, int, int]:
    """n extents following one that ended at ``start`` (exclusive) and ``target``."""
    lg = np.floor(np.exp(rng.uniform(0.0, np.log(MAX_LEN_GRANULES + 1), n)))
    lg = np.clip(lg, 1, MAX_LEN_GRANULES).astype(np.uint64)
    gaps = rng.integers(0, MAX_GAP_GRANULES, n, endpoint=True, dtype=np.uint64)
    labels = rng.integers(0, NUM_LABELS, n, dtype=np.uint32)
    lengths = lg * np.uint64(GRANULE)
    step = (gaps + lg) * np.uint64(GRANULE)
    ends = np.cumsum(step, dtype=np.uint64) + np.uint64(start)
    starts = ends - lengths
    tends = np.cumsum(lengths, dtype=np.uint64) + np.uint64(target)
    targets = tends - lengths
    next_start = int(ends[-1]) if n else start
    next_target = int(tends[-1]) if n else target
    return Extents(starts, lengths, targets, labels), next_start, next_target


def iter_extent_chunks(n: int, seed: int = DEFAULT_SEED, chunk: int = 1 << 22) -> Iterator[Extents]:
    """n extents in address order, ``chunk`` at a time (keeps peak memory down at 10^8)."""
    rng = np.random.default_rng(seed)
    start, target = BASE, TARGET_BASE
    done = 0
    while done < n:
        k = min(chunk, n - done)
        ext, start, target = _draw(rng, k, start, target)
        done += k
        yield ext
    assert start < 1 << 48, "addresses left the 48-bit space"


@functools.lru_cache(maxsize=8)
def make_extents(n: int, seed: int = DEFAULT_SEED) -> Extents:
    """n extents in address order (cached: callers must not modify the arrays)."""
    ext, end, _ = _draw(np.random.default_rng(seed), n, BASE, TARGET_BASE)
    assert end < 1 << 48, "addresses left the 48-bit space"
    for a in ext:
        a.setflags(write=False)
    return ext


def engine_build(modules: tuple = ("extentmap", "_sort")) -> dict:
    """Which build of the engine ran: the extension files' mtimes and a hash of them (the
    engine is rebuilt in place, so results name the build they measured).  ``modules``:
    the extension modules that count (default: the extent map's); ``()`` for all of them."""
    import hashlib
    import time

    core = Path(__file__).parent.parent / "_core"   # this dcdmap, wherever it is installed
    h = hashlib.sha256()
    files = {}
    for so in sorted(core.glob("*.so")):
        if modules and so.name.split(".")[0] not in modules:
            continue                     # other modules of dcdmap._core are not measured
        h.update(so.read_bytes())
        files[so.name.split(".")[0]] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(so.stat().st_mtime))
    return {"path": str(core.parent), "sha256": h.hexdigest()[:16], "built": files}


def span(ext: Extents) -> tuple[int, int]:
    """[first start, last end) of extents in address order."""
    return int(ext.starts[0]), int(ext.starts[-1] + ext.lengths[-1])


def uniform_queries(ext: Extents, m: int, seed: int = DEFAULT_SEED + 1) -> np.ndarray:
    """m byte addresses uniform over [first start, last end), in random order."""
    lo, hi = span(ext)
    return np.random.default_rng(seed).integers(lo, hi, m, dtype=np.uint64)


def reference_translate(ext: Extents, q: np.ndarray) -> np.ndarray:
    """The static limit: ``numpy.searchsorted`` on the sorted starts, then the end check.

    ``i = searchsorted(starts, q, 'right') - 1``; a query is mapped when ``i >= 0`` and
    ``q < ends[i]``; it translates to ``targets[i] + (q - starts[i])``, else ``MISSING``.
    """
    return searchsorted_translate(ext.starts, ext.ends, ext.targets, q)


def searchsorted_translate(starts: np.ndarray, ends: np.ndarray, targets: np.ndarray,
                           q: np.ndarray) -> np.ndarray:
    i = np.searchsorted(starts, q, "right").astype(np.intp) - 1
    neg = i < 0
    i[neg] = 0                                   # i == -1: below the first start
    hit = (q < ends[i]) & ~neg
    return np.where(hit, targets[i] + (q - starts[i]), MISSING)


def hit_queries(ext: Extents, m: int, seed: int = DEFAULT_SEED + 2) -> np.ndarray:
    """m addresses uniform over the span, keeping only mapped ones (for scalar translate)."""
    out = []
    have = 0
    rng_seed = seed
    while have < m:
        q = uniform_queries(ext, 2 * (m - have) + 16, rng_seed)
        q = q[reference_translate(ext, q) != MISSING]
        out.append(q)
        have += q.shape[0]
        rng_seed += 1000
    return np.concatenate(out)[:m]


def split_for_mutation(n_base: int, n_extra: int, seed: int = DEFAULT_SEED) -> tuple[Extents, Extents]:
    """(base, extra): n_base + n_extra extents split at random; base in address order,
    extra in random order.  Inserting any of extra into a map of base never overlaps."""
    ext = make_extents(n_base + n_extra, seed)
    rng = np.random.default_rng(seed + 3)
    pick = rng.choice(n_base + n_extra, n_extra, replace=False)
    keep = np.ones(n_base + n_extra, dtype=bool)
    keep[pick] = False
    return ext.take(np.flatnonzero(keep)), ext.take(pick)


def shuffled(ext: Extents, seed: int = DEFAULT_SEED + 4) -> Extents:
    """The same extents in a random order (the from_arrays input)."""
    return ext.take(np.random.default_rng(seed).permutation(len(ext)))


def random_victims(ext: Extents, k: int, seed: int = DEFAULT_SEED + 5) -> Extents:
    """k distinct extents of ext, in random order (the ranges a remove benchmark unmaps)."""
    return ext.take(np.random.default_rng(seed).choice(len(ext), k, replace=False))


def split_pairs(n: int, seed: int = DEFAULT_SEED) -> Extents:
    """n extents where each pair (2k, 2k+1) is one extent of make_extents(n // 2) cut in
    halves of equal length: contiguous, same label, target continuing.  coalesce() on a
    map of them makes n // 2 merges (a few more where a gap of 0 joins two pairs of one label)."""
    half = make_extents(n // 2, seed)
    starts = np.empty(2 * len(half), np.uint64)
    lengths = np.empty_like(starts)
    targets = np.empty_like(starts)
    labels = np.empty(2 * len(half), np.uint32)
    # Double every length so both halves stay granule-aligned: scale the layout by 2
    # around BASE (gaps double too; the addresses stay well below 2**48).
    s2 = np.uint64(BASE) + (half.starts - np.uint64(BASE)) * np.uint64(2)
    t2 = np.uint64(TARGET_BASE) + (half.targets - np.uint64(TARGET_BASE)) * np.uint64(2)
    starts[0::2] = s2
    starts[1::2] = s2 + half.lengths
    lengths[0::2] = half.lengths
    lengths[1::2] = half.lengths
    targets[0::2] = t2
    targets[1::2] = t2 + half.lengths
    labels[0::2] = half.labels
    labels[1::2] = half.labels
    return Extents(starts, lengths, targets, labels)


def write_reports(markdown: Optional[str], json_path: Optional[str], text: str, payload: Any,
                  default: Callable[[Any], Any] = float) -> None:
    """Write a script's report as Markdown and its data as JSON, where asked."""
    if markdown:
        Path(markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown).write_text(text)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(payload, indent=1, default=default))

