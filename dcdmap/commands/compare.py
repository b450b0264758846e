"""``dcdmap compare``: one workload through every VM presentation, side by side."""
from __future__ import annotations

import argparse
import os
import sys

from . import count, size

HELP = "run a workload through each VM presentation and compare the costs"
DESCRIPTION = """\
Generate a workload (or read one with --trace), play it over a memory pool, its Linux hosts
and their VMs once per way of presenting pool capacity to a VM (ACPI hot-plug as devdax or
kmem, virtio-mem, the RFC's extended virtio-mem, an emulated CXL Type 3 device), and print
the metrics side by side: guest address space used and wasted, guest objects, control
operations, how capacity is taken back, tag discoverability, run time.

Files written to the output folder (--out): compare.png (a chart), compare.json,
compare.csv, workload.jsonl (the workload, dcdmap-trace format), run-<presentation>.jsonl
(everything each run did, replayable with `dcdmap replay`) and qmp-<presentation>.jsonl
(the QMP commands that drive QEMU through the same run, checkable with `dcdmap check`)."""
EXAMPLES = """\
  dcdmap compare                                  the default preset, all presentations
  dcdmap compare --preset pond-16 --seed 3        Pond's 16-socket pool
  dcdmap compare --knob migrate_prob=0.5          more migrations: more take-backs
  dcdmap compare --hosts 4 --pool-size 32GiB --presentations type3,virtio-mem-extended
  dcdmap compare --trace my-workload.jsonl --json > result.json
  dcdmap compare --csv --no-files                 CSV on stdout, nothing written
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..orchestrator import PLACEMENTS, PRESENTATIONS
    from ..workload import PRESETS
    w = p.add_argument_group("workload")
    w.add_argument("--preset", default="default", choices=list(PRESETS),
                   help="workload preset (default: default; see docs/workload.md)")
    w.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    w.add_argument("--hosts", type=count, help="hosts on the pool (default: the preset's)")
    w.add_argument("--pool-size", type=size, metavar="SIZE", help="pool size, e.g. 64GiB (default: the preset's)")
    w.add_argument("--duration", type=count, metavar="TICKS", help="simulated ms (default: the preset's)")
    w.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE",
                   help="any other preset knob, e.g. migrate_prob=0.5 (repeatable; see docs/workload.md)")
    w.add_argument("--trace", metavar="FILE", help="read the workload from a dcdmap-trace file instead")
    r = p.add_argument_group("run")
    r.add_argument("--presentations", default=",".join(PRESENTATIONS), metavar="LIST",
                   help=f"comma-separated, in column order (default: {','.join(PRESENTATIONS)})")
    r.add_argument("--placement", default="first-fit", choices=PLACEMENTS, help="extent placement (default first-fit)")
    r.add_argument("--appliances", type=count, default=1, help="memory appliances sharing the pool (default 1)")
    o = p.add_argument_group("output")
    o.add_argument("--out", default="dcdmap-compare", metavar="DIR", help="output folder (default ./dcdmap-compare)")
    o.add_argument("--no-files", action="store_true", help="write no files")
    fmt = o.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON instead of the table")
    fmt.add_argument("--csv", action="store_true", help="print CSV instead of the table")


def _workload(args):
    from ..check import read_trace
    from ..errors import ConfigurationError
    from ..workload import Workload, generate
    if args.trace:
        if args.hosts or args.pool_size or args.duration or args.knob or args.preset != "default":
            raise ConfigurationError("--trace gives the workload: --preset, --hosts, --pool-size, "
                                     "--duration and --knob do not apply")
        return Workload.from_jsonl(read_trace(args.trace))   # UTF-8 errors name their line
    return generate(args.preset, seed=args.seed, hosts=args.hosts, pool_size=args.pool_size,
                    duration=args.duration, **dict(_knob(k) for k in args.knob))


def _knob(text: str):
    """NAME=VALUE, the value read as JSON when it can be (numbers, lists), else as text."""
    import json
    from ..errors import ConfigurationError
    name, eq, value = text.partition("=")
    if not eq or not name:
        raise ConfigurationError(f"--knob {text!r}: expected NAME=VALUE")
    try:
        v = json.loads(value)
    except ValueError:
        v = value
    return name.strip(), tuple(v) if isinstance(v, list) else v


def main(args) -> int:
    from ..compare import compare
    from ..orchestrator import Config
    from ..progress import Progress

    presentations = [p.strip() for p in args.presentations.split(",") if p.strip()]
    config = Config(placement=args.placement, appliances=args.appliances)
    workload = _workload(args)
    out = None if args.no_files else args.out
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "workload.jsonl"), "w", encoding="utf-8") as f:
            workload.to_jsonl(f)
    written = []

    def keep(p, orch):
        if not out:
            return
        with open(os.path.join(out, f"run-{p}.jsonl"), "w", encoding="utf-8") as f:
            orch.write_trace(f)
        written.append(f"run-{p}.jsonl")
        for a in range(len(orch.devices)):
            name = f"qmp-{p}.jsonl" if len(orch.devices) == 1 else f"qmp-{p}-appliance{a}.jsonl"
            with open(os.path.join(out, name), "w", encoding="utf-8") as f:
                orch.write_qmp(f, a)
            written.append(name)

    total = len(workload.events) * max(1, len(presentations))
    with Progress(total, "dcdmap compare") as bar:
        result = compare(workload, presentations, config, progress=bar.set, keep=keep)

    if out:
        with open(os.path.join(out, "compare.json"), "w", encoding="utf-8") as f:
            f.write(result.to_json() + "\n")
        with open(os.path.join(out, "compare.csv"), "w", encoding="utf-8", newline="") as f:
            result.write_csv(f)
        result.plot(os.path.join(out, "compare.png"))
        written = ["compare.png", "compare.json", "compare.csv", "workload.jsonl"] + written

    if args.json:
        print(result.to_json())
    elif args.csv:
        sys.stdout.write(result.csv())
    else:
        w, run = result.workload, result.run
        print(f"workload: preset {w['preset']}, seed {w['seed']}, {w['hosts']} hosts, "
              f"pool {w['pool_size'] / 2**30:.0f} GiB, {w['events']} events, {w['vms']} VMs, "
              f"{sum(w['allocations'].values())} allocations, {w['extents']} extents")
        print(f"every run: {run['bytes_accepted'] / 2**30:.1f} GiB accepted of {run['bytes_offered'] / 2**30:.1f} "
              f"offered, {run['shared_verified']} shared allocations verified "
              f"({'consistent' if run['shared_consistent'] else 'INCONSISTENT'}), "
              f"{run['deferred']} releases deferred, {run['forced']} forced")
        print()
        print(result.table())
        print()
        print(result.details())
    if out:
        print(f"wrote {', '.join(written)} to {out}/", file=sys.stderr if (args.json or args.csv) else sys.stdout)
    return 0
