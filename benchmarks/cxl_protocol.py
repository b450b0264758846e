"""The protocol model at scale: offers, host acceptance, sharing and release, per extent.

    python benchmarks/cxl_protocol.py                 # 2 x 10^5 extents, ~1 min
    python benchmarks/cxl_protocol.py --extents 20000 # a smoke test

One device with a 64 GiB shareable region and 8 heads, 64 KiB blocks and 64 KiB alignment
on the hosts (so that many small extents fit).  The run:

1. **offer + accept**: head 0 receives ``extents`` extents in offers of 25 (one More chain
   each; re-split for another head, an offer stays under Linux's cap of 100 records per
   chain), each offer one tag; its Host polls after every offer: the
   whole §4.1 pipeline and one Add-Response per chain.
2. **share**: each tag is shared with heads 1..7 (enable-shared-access, re-split and
   shuffled per head), and every host accepts it; then ``verify_views`` over the 8 hosts'
   views of a sample of tags.
3. **release**: every tag is released on every head (tag-based), each host answers with
   one Release DC per extent.

Reported: wall time and µs per extent of each phase, and, as the same-run yardstick, the
ratio to ``ExtentMap.insert_many`` + ``remove_many`` of the same number of extents (the
engine work a model cannot avoid).  Absolute times drift on a shared machine; the ratio
drifts less.
"""
from __future__ import annotations

import argparse
import time
import uuid

import numpy as np

from dcdmap import ExtentMap, verify_views
from dcdmap.cxl import Device, Host, Region

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def run(extents: int, heads: int, per_offer: int, seed: int) -> dict:
    block = 64 * KiB
    region = Region(base=0, length=64 * GiB, block_size=block, shareable=True)
    dev = Device([region], heads=heads, seed=seed, max_extents=1 << 31)
    hosts = [Host(dev, h, alignment=block) for h in range(heads)]
    rng = np.random.default_rng(seed)
    offers = extents // per_offer
    # Extents of 1..4 blocks at random free places: a fragmented layout.
    sizes = rng.integers(1, 5, extents).astype(np.uint64) * np.uint64(block)
    starts = np.cumsum(sizes + rng.integers(0, 3, extents).astype(np.uint64) * np.uint64(block)) - sizes
    tags = [uuid.UUID(int=i + 1) for i in range(offers)]
    out = {"extents": extents, "heads": heads}

    t0 = time.perf_counter()
    for k in range(offers):
        lo, hi = k * per_offer, (k + 1) * per_offer
        dev.add_capacity(0, 0, np.stack([starts[lo:hi], sizes[lo:hi]], 1), tag=tags[k])
        hosts[0].poll()
    out["offer_accept_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for k in range(offers):
        for h in range(1, heads):
            dev.add_capacity(h, 0, policy="enable-shared-access", tag=tags[k])
            hosts[h].poll()
    out["share_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sample = tags[:: max(1, offers // 50)]
    media = [h.media_map() for h in hosts]
    assert all(verify_views([h.view(t) for h in hosts], media).consistent for t in sample)
    out["verify_s"] = time.perf_counter() - t0
    out["verified_tags"] = len(sample)

    t0 = time.perf_counter()
    for k in range(offers):
        for h in range(heads):
            dev.release_capacity(h, 0, policy="tag-based", tag=tags[k])
            hosts[h].poll()
    out["release_s"] = time.perf_counter() - t0
    cap = dev.capacity(0)
    assert cap.free == cap.total, cap

    # Yardstick: the engine work alone for the same extents, as one batch each.
    t0 = time.perf_counter()
    m = ExtentMap()
    m.insert_many(starts, sizes)
    m.remove_many(starts, sizes)
    out["engine_s"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--extents", type=int, default=200_000)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--per-offer", type=int, default=25)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    r = run(a.extents, a.heads, a.per_offer, a.seed)
    n = r["extents"]
    shared = n * (r["heads"] - 1)
    print(f"{n} extents in offers of {a.per_offer}, {r['heads']} heads")
    print(f"{'phase':<28}{'wall s':>9}{'us/extent':>11}{'x engine':>10}")
    per_engine = r["engine_s"] / n
    for name, key, count in [("offer + accept (head 0)", "offer_accept_s", n),
                             (f"share to {r['heads'] - 1} heads + accept", "share_s", shared),
                             ("release on every head", "release_s", n * r["heads"])]:
        us = r[key] / count * 1e6
        print(f"{name:<28}{r[key]:>9.2f}{us:>11.2f}{us / (per_engine * 1e6):>10.1f}")
    print(f"{'verify_views, ' + str(r['verified_tags']) + ' tags':<28}{r['verify_s']:>9.2f}")
    print(f"{'engine insert+remove_many':<28}{r['engine_s']:>9.3f}{per_engine * 1e6:>11.3f}{1.0:>10.1f}")


if __name__ == "__main__":
    main()
