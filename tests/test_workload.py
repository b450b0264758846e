"""The seeded workload generator and the dcdmap-trace JSON-lines format (dcdmap.workload)."""
from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pytest

from dcdmap.errors import ConfigurationError, CorruptDataError
from dcdmap.units import GiB, MiB
from dcdmap.workload import (
    NULL_TAG, PRESETS, Allocate, Host, Kexec, Migrate, Preset, Release, VmStart, VmStop,
    Workload, generate, presets,
)

# Small versions of every preset (the same knobs over a shorter run), so the invariant tests
# see each preset's mix in well under a second each.
SMALL = {"default": {}, "pond-16": {"duration": 600_000}, "pond-32": {"duration": 300_000},
         "famfs-shared": {}, "large": {"duration": 120_000}}


@pytest.fixture(scope="module", params=sorted(SMALL))
def workload(request):
    return generate(request.param, seed=7, **SMALL[request.param])


def roundtrip(w: Workload) -> Workload:
    buf = io.StringIO()
    w.to_jsonl(buf)
    return Workload.from_jsonl(io.StringIO(buf.getvalue()))


# -- determinism and parameters -----------------------------------------------------------

def test_same_seed_same_events():
    a, b = generate("default", seed=11), generate("default", seed=11)
    assert a == b and a.events == b.events
    assert generate("default", seed=12).events != a.events


def test_tags_derive_from_seed_and_alloc():
    w = generate("default", seed=5)
    for e in w.allocations():
        if e.kind == "untagged":
            assert e.tag == NULL_TAG
        else:
            assert e.tag == uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_URL, "https://dcdmap/workload"),
                                       f"5/{e.alloc}")
            assert e.tag.version == 5


def test_overrides_and_errors():
    w = generate("default", hosts=3, pool_size="16GiB", duration=30_000, extent_align=64)
    assert (w.params["hosts"], w.params["pool_size"], w.params["duration"]) == (3, 16 * GiB, 30_000)
    assert w.preset == "default" and w.seed == 0
    assert generate(Preset(hosts=2), duration=10_000).preset == "custom"
    with pytest.raises(ConfigurationError, match="unknown preset"):
        generate("nope")
    with pytest.raises(ConfigurationError, match="unknown knob"):
        generate(colour="red")
    with pytest.raises(ConfigurationError, match="stranded"):
        generate(stranded=(0.3, 0.1))
    with pytest.raises(ConfigurationError, match="2 hosts"):
        generate(hosts=1)
    with pytest.raises(ConfigurationError, match="multiple of 64"):
        generate(extent_align=100)
    with pytest.raises(ConfigurationError, match="seed"):
        generate(seed=-1)


def test_presets_listed_with_descriptions():
    listed = presets()
    assert set(listed) == set(PRESETS) >= {"default", "pond-16", "pond-32", "famfs-shared", "large"}
    assert all(isinstance(d, str) and d and "\n" not in d for d in listed.values())
    assert PRESETS["pond-16"].hosts == 16 and PRESETS["pond-32"].hosts == 32
    assert PRESETS["large"].hosts == 64


# -- invariants of every preset -----------------------------------------------------------

def test_sorted_by_tick(workload):
    ticks = [e.tick for e in workload.events]
    assert ticks == sorted(ticks)


def test_pool_never_over_committed_and_empty_at_end(workload):
    pool, used, live = workload.params["pool_size"], 0, {}
    for e in workload.events:
        if isinstance(e, Allocate):
            used += e.size
            live[e.alloc] = e.size
            assert used <= pool, e
        elif isinstance(e, Release):
            used -= live.pop(e.alloc)
    assert used == 0 and not live


def test_extent_sizes(workload):
    align, top = workload.params["extent_align"], workload.params["extent_max"]
    for e in workload.allocations():
        sizes = e.extent_sizes
        assert sizes.dtype == np.uint64 and not sizes.flags.writeable
        assert int(sizes.sum()) == e.size and e.size % align == 0
        assert (sizes % align == 0).all() and (sizes > 0).all() and (sizes <= top).all()
        assert 0 <= e.untouched <= e.size


def test_allocation_hosts(workload):
    H = workload.params["hosts"]
    for e in workload.allocations():
        assert all(0 <= h < H for h in e.hosts)
        if e.kind == "shared":
            assert len(e.hosts) >= 2 and len(set(e.hosts)) == len(e.hosts)
        else:
            assert len(e.hosts) == 1
        assert (e.tag == NULL_TAG) == (e.kind == "untagged")


def test_lifecycles(workload):
    allocated, released, started, stopped = {}, {}, {}, {}
    for e in workload.events:
        if isinstance(e, Allocate):
            allocated[e.alloc] = e.tick
        elif isinstance(e, Release):
            assert e.alloc in allocated and e.alloc not in released
            released[e.alloc] = e.tick
            assert e.tick > allocated[e.alloc]
        elif isinstance(e, VmStart):
            started[e.vm] = e.tick
            assert 0 <= e.untouched <= e.memory
        elif isinstance(e, VmStop):
            assert e.vm in started and e.tick > started[e.vm]
            stopped[e.vm] = e.tick
        elif isinstance(e, Migrate):
            assert e.vm in started and e.vm not in stopped and e.policy in ("drain", "prepopulate")
        elif isinstance(e, Kexec):
            assert e.policy in ("release", "preserve")
    assert released.keys() == allocated.keys() and stopped.keys() == started.keys()
    assert max(released.values()) <= workload.params["duration"]


def test_hosts_and_stranded(workload):
    hosts = [e for e in workload.events if isinstance(e, Host)]
    assert [h.host for h in hosts] == list(range(workload.params["hosts"]))
    lo, hi = workload.params["stranded"]
    assert all(lo * h.memory - 2 * MiB <= h.stranded <= hi * h.memory for h in hosts)


def test_famfs_shared_dominates():
    s = generate("famfs-shared", seed=1).summary()
    assert s["bytes"]["shared"] > s["bytes"]["app"] + s["bytes"]["untagged"]


def test_unaligned_extents_reach_64_bytes():
    w = generate("default", seed=2, extent_align=64, job_size=(64, 1 * MiB), vm_interarrival=0)
    sizes = np.concatenate([e.extent_sizes for e in w.allocations()])
    assert sizes.min() < 2 * MiB and (sizes % 64 == 0).all()


# -- summary ---------------------------------------------------------------------------------

def test_summary_of_a_hand_made_workload():
    t = uuid.UUID(int=7)
    w = Workload("hand", 0, {}, (
        Host(0, 0, 64 * GiB, 0), Host(0, 1, 64 * GiB, 1 * GiB),
        VmStart(1, 0, 0, 8 * GiB, 4 * GiB),
        Allocate(1, 0, "app", (0,), 4 * MiB, t, [2 * MiB, 2 * MiB], 0, 0),
        Allocate(2, 1, "shared", (0, 1, 2), 6 * MiB, t, [2 * MiB] * 3),
        Release(3, 0),
        Allocate(4, 2, "untagged", (1,), 2 * MiB, NULL_TAG, [2 * MiB]),
        Migrate(5, 0, 1, "drain"), VmStop(6, 0), Kexec(6, 1, "release"),
        Release(7, 1, forced=True), Release(7, 2)))
    s = w.summary()
    assert s["events"] == {"host": 2, "vm_start": 1, "vm_stop": 1, "allocate": 3, "release": 3,
                           "migrate": 1, "kexec": 1}
    assert s["allocations"] == {"app": 1, "shared": 1, "untagged": 1}
    assert s["bytes"] == {"app": 4 * MiB, "shared": 6 * MiB, "untagged": 2 * MiB}
    assert s["peak_bytes"] == 10 * MiB and s["peak_extents"] == 5 and s["extents"] == 6
    assert s["hosts"] == 3 and s["vms"] == 1
    assert roundtrip(w) == w


# -- round trips -----------------------------------------------------------------------------

def test_roundtrip_every_preset(workload):
    back = roundtrip(workload)
    assert back == workload and back.summary() == workload.summary()


def test_roundtrip_large_reduced_and_from_string():
    w = generate("large", seed=3, duration=60_000)
    assert w.summary()["extents"] > 10_000
    buf = io.StringIO()
    w.to_jsonl(buf)
    assert Workload.from_jsonl(buf.getvalue()) == w
    header = json.loads(buf.getvalue().splitlines()[0])
    assert header == {"format": "dcdmap-trace", "version": 1, "preset": "large", "seed": 3,
                      "params": w.params}


def test_trace_line_shape():
    buf = io.StringIO()
    Workload("x", 1, {"a": 1}, (
        Allocate(0, 4, "app", (2,), 4 * MiB, uuid.UUID(int=1), [2 * MiB] * 2, 2 * MiB),)
    ).to_jsonl(buf)
    line = json.loads(buf.getvalue().splitlines()[1])
    assert line == {"kind": "allocate", "tick": 0, "alloc": 4, "alloc_kind": "app", "hosts": [2],
                    "size": 4 * MiB, "tag": "00000000-0000-0000-0000-000000000001",
                    "extent_sizes": [2 * MiB, 2 * MiB], "untouched": 2 * MiB, "vm": None}


# -- malformed input ---------------------------------------------------------------------------

HEADER = '{"format":"dcdmap-trace","version":1,"preset":"p","seed":0,"params":{}}'
TAG = str(uuid.UUID(int=9))


def alloc_line(**changes):
    d = {"kind": "allocate", "tick": 5, "alloc": 0, "alloc_kind": "app", "hosts": [0],
         "size": 128, "tag": TAG, "extent_sizes": [64, 64], "untouched": 0, "vm": None}
    d.update(changes)
    return json.dumps({k: v for k, v in d.items() if v != "DROP"})


GOOD = [HEADER, alloc_line(), '{"kind":"release","tick":6,"alloc":0,"forced":false}']


def test_good_lines_parse():
    w = Workload.from_jsonl(GOOD)
    assert len(w.events) == 2 and w.events[0].extent_sizes.tolist() == [64, 64]
    assert Workload.from_jsonl("\n".join(GOOD) + "\n\n") == w


@pytest.mark.parametrize("lines, lineno, message", [
    ([HEADER, "{not json"], 2, "bad JSON"),
    (["[1, 2]"], 1, "not a dcdmap-trace header"),
    (['{"format":"other","version":1}'], 1, "not a dcdmap-trace header"),
    ([HEADER.replace('"version":1', '"version":2')], 1, "unsupported trace version 2"),
    ([HEADER.replace('"seed":0', '"seed":"0"')], 1, "'seed' must be int"),
    ([HEADER.replace(',"params":{}', '')], 1, "missing field 'params'"),
    ([], 1, "missing header"),
    ([HEADER, '{"tick":0}'], 2, "missing field 'kind'"),
    ([HEADER, '{"kind":"explode","tick":0}'], 2, "unknown kind 'explode'"),
    ([HEADER, alloc_line(size="DROP")], 2, "missing field 'size'"),
    ([HEADER, alloc_line(colour=1)], 2, "unexpected field 'colour'"),
    ([HEADER, alloc_line(size="128")], 2, "'size' must be an int, not str"),
    ([HEADER, alloc_line(tick=True)], 2, "'tick' must be an int, not bool"),
    ([HEADER, alloc_line(tick=1.5)], 2, "'tick' must be an int, not float"),
    ([HEADER, alloc_line(tag="zzz")], 2, "'tag' is not a UUID"),
    ([HEADER, alloc_line(hosts=[])], 2, "'hosts' must be a non-empty list"),
    ([HEADER, alloc_line(extent_sizes=[64, "64"])], 2, "'extent_sizes' must be a non-empty list"),
    ([HEADER, alloc_line(size=-128)], 2, "'size' is negative"),
    ([HEADER, alloc_line(extent_sizes=[192, -64])], 2, r"'extent_sizes'\[1\] = -64"),
    ([HEADER, alloc_line(extent_sizes=[100, 28])], 2, r"'extent_sizes'\[0\] = 100"),
    ([HEADER, alloc_line(extent_sizes=[64])], 2, "sum to 64, not to size 128"),
    ([HEADER, alloc_line(untouched=192)], 2, "untouched 192 exceeds size 128"),
    ([HEADER, alloc_line(alloc_kind="lent")], 2, "unknown alloc_kind 'lent'"),
    ([HEADER, alloc_line(alloc_kind="shared")], 2, ">= 2 distinct hosts"),
    ([HEADER, alloc_line(hosts=[0, 1])], 2, "exactly 1 host"),
    ([HEADER, alloc_line(alloc_kind="untagged")], 2, "null UUID"),
    ([HEADER, alloc_line(), alloc_line(tick=4, alloc=1)], 3, "tick 4 goes backwards"),
    ([HEADER, alloc_line(), alloc_line()], 3, "alloc 0 allocated twice"),
    ([HEADER, '{"kind":"release","tick":0,"alloc":3,"forced":false}'], 2, "alloc 3 released but not live"),
    ([HEADER, '{"kind":"release","tick":0,"alloc":3,"forced":0}'], 2, "'forced' must be a bool"),
    ([HEADER, '{"kind":"vm_stop","tick":0,"vm":1}'], 2, "vm 1 stops but is not running"),
    ([HEADER, '{"kind":"kexec","tick":0,"host":1,"policy":"panic"}'], 2, "unknown kexec policy"),
    ([HEADER, '"just a string"'], 2, "must be a JSON object"),
    ([HEADER, "", alloc_line(vm=-1)], 3, "'vm' is negative"),
])
def test_malformed_input(lines, lineno, message):
    with pytest.raises(CorruptDataError, match=rf"^line {lineno}: .*{message}"):
        Workload.from_jsonl(lines)
