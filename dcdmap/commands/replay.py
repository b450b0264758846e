"""``dcdmap replay``: run a trace again and report the final state."""
from __future__ import annotations

import argparse
import json

HELP = "replay a run, workload, QMP or device-log trace and report the final state"
DESCRIPTION = """\
Replay TRACE and report the final state.  The kind of trace is read from its first line:

  dcdmap-run    a run written by `dcdmap compare` (run-*.jsonl): the workload is run again
                with the same configuration and every action and the final report are
                compared; exit status 1 at the first difference.
  dcdmap-trace  a workload (workload.jsonl, or your own): run through the orchestrator
                with --presentation / --placement / --appliances.
  QMP / log     QMP commands (qmp-*.jsonl), DC event records or a dcdmap device log: run
                through QEMU's QMP layer, the device and one Linux host per head, as
                `dcdmap check` does (a leading device entry configures the device).

Exit status: 0 when the replay ran (and, for a run, matched), 1 otherwise."""
EXAMPLES = """\
  dcdmap replay dcdmap-compare/run-type3.jsonl              a compare run, checked action by action
  dcdmap replay dcdmap-compare/workload.jsonl --presentation virtio-mem
  dcdmap replay dcdmap-compare/qmp-type3.jsonl --json       the device and hosts after the QMP commands
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..orchestrator import PLACEMENTS, PRESENTATIONS
    from . import count
    p.add_argument("trace", metavar="TRACE", help="the trace file ('-' for standard input)")
    p.add_argument("--presentation", choices=PRESENTATIONS, help="for a workload: present VM capacity this way")
    p.add_argument("--placement", choices=PLACEMENTS, default="first-fit", help="for a workload (default first-fit)")
    p.add_argument("--appliances", type=count, default=1, help="for a workload (default 1)")
    p.add_argument("--json", action="store_true", help="print the final state as JSON")


def _kind(lines) -> str:
    for line in lines:
        if line.strip() and not line.lstrip().startswith("#"):
            try:
                first = json.loads(line)
            except ValueError:
                return "qmp"                      # the checker reports the line
            fmt = first.get("format") if isinstance(first, dict) else None
            return fmt if fmt in ("dcdmap-run", "dcdmap-trace") else "qmp"
    return "empty"


def _report_lines(report) -> list:
    f = report.final
    out = [f"capacity: {f.total / 2**30:.1f} GiB, {f.free / 2**30:.1f} free, {f.pending / 2**30:.1f} pending, "
           f"{f.accepted / 2**30:.1f} accepted",
           f"offered {report.bytes_offered / 2**30:.1f} GiB in {report.extents_offered} extents, accepted "
           f"{report.bytes_accepted / 2**30:.1f}, released {report.bytes_released / 2**30:.1f}; "
           f"peak {report.peak_extents} extents accepted",
           f"shared allocations verified: {report.shared_verified} "
           f"({'consistent' if report.shared_consistent else 'INCONSISTENT'}); releases deferred "
           f"{report.deferred}, re-issued {report.retries}, forced {report.forced} ({report.bytes_lost} bytes lost)",
           f"migrations: {report.migrations or 'none'}; kexecs: {report.kexecs or 'none'}",
           f"refusals: {len(report.refusals)}"]
    out += [f"  tick {t}: {what}: {why}" for t, what, why in report.refusals[:20]]
    if len(report.refusals) > 20:
        out.append(f"  ... and {len(report.refusals) - 20} more")
    return out


def main(args) -> int:
    from ..check import check_lines, read_trace
    from ..errors import CorruptDataError
    from ..orchestrator import Config, Orchestrator, replay
    from ..progress import Progress
    from ..workload import Workload

    lines = read_trace(args.trace)
    kind = _kind(lines)
    if kind == "empty":
        raise CorruptDataError(f"{args.trace}: no trace in the file (it is empty)")
    if kind == "dcdmap-run":
        events = sum(1 for line in lines if line.startswith('{"kind"'))
        with Progress(events, "dcdmap replay") as bar:
            orch, diff = replay(lines, bar.set)
        if args.json:
            print(json.dumps({"kind": kind, "identical": diff is None, "difference": diff,
                              "report": orch.report.to_dict()}, indent=2, default=str))
        else:
            print(f"{args.trace}: a dcdmap-run of {len(orch.workload.events)} events, "
                  f"{len(orch.actions)} actions, replayed: " + ("identical" if diff is None else "DIFFERENT"))
            if diff is not None:
                print(f"  {diff}")
            print("\n".join(_report_lines(orch.report)))
        return 0 if diff is None else 1
    if kind == "dcdmap-trace":
        workload = Workload.from_jsonl(lines)
        orch = Orchestrator(workload, Config(presentation=args.presentation, placement=args.placement,
                                             appliances=args.appliances))
        with Progress(len(workload.events), "dcdmap replay") as bar:
            report = orch.run(bar.set)
        if args.json:
            print(json.dumps({"kind": kind, "report": report.to_dict()}, indent=2, default=str))
        else:
            print(f"{args.trace}: a workload of {len(workload.events)} events (preset {workload.preset}, "
                  f"seed {workload.seed}), run with presentation {args.presentation}, placement "
                  f"{args.placement}, {args.appliances} appliance(s)")
            print("\n".join(_report_lines(report)))
        return 0
    report = check_lines(lines)
    if args.json:
        print(json.dumps({"kind": "qmp", **report.to_dict(args.trace)}, indent=2, default=str))
    else:
        print(report.summary(args.trace))
        st = report.state
        print(json.dumps(st, indent=1, default=str) if st else "no state")
        for f in report.findings[:20]:
            print(f"  {args.trace}:{f}")
    return 0 if report.ok else 1
