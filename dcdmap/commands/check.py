"""``dcdmap check TRACE``: every step of a QMP or DC event trace that QEMU or Linux would refuse.

The work is :func:`dcdmap.check.check_lines`; this module reads the file, prints one
compiler-style line per finding (``FILE:LINE: refused by ...``) and a summary, or a JSON
object with ``--json``, and exits 1 when there is any finding.
"""
from __future__ import annotations

import argparse
import json

from . import count

HELP = "report every step of a QMP / DC event trace that QEMU or a Linux host would refuse"
DESCRIPTION = """\
Read TRACE (JSON lines; '-' for standard input): QMP commands for QEMU's CXL Dynamic
Capacity device, DC event records, DAX claims, or a dcdmap device log.  Each line runs
through QEMU's QMP checks and a model of the device, then every head's Linux (DCD v11)
host reads the events the line caused.  Every refusal is printed as FILE:LINE: who refused
and why (QEMU's error text, or Linux's rule and errno), then a summary line.

Exit status: 0 when nothing would be refused, 1 when something would (or on an error: an
unreadable trace, a device configuration that breaks a rule), 2 for bad options.
See docs/check.md for the line formats."""
EXAMPLES = """\
  dcdmap check session.jsonl                        one region 0:1G:2M, one head with a Linux host
  dcdmap check --upstream session.jsonl             as upstream QEMU: prescriptive only, no tags, head 0
  dcdmap check --region 0:1G:2M --region 4G:4G:2M:shareable --heads 2 trace.jsonl
  dcdmap check --kernel v10 --json - < trace.jsonl  a v10 kernel; the findings as one JSON object
  dcdmap check --heads 2 --hosts 0 trace.jsonl      head 1 runs no host: its offers stay pending

  A trace line (QMP):
    {"execute": "cxl-add-dynamic-capacity", "arguments": {"path": "cxl-dcd0", "host-id": 0,
     "selection-policy": "prescriptive", "region": 0, "extents": [{"offset": 0, "len": 2097152}]}}
  A DC event, and a DAX claim:
    {"type": "ADD_CAPACITY", "head": 0, "start": 0, "length": 2097152, "tag": null, "more": false}
    {"dax": "create", "head": 0, "tag": "0"}
"""


def _region(text: str):
    """An argparse type: a region from BASE:LENGTH[:BLOCK[:FLAGS]] (as python -m dcdmap.cxl.qmp)."""
    from ..cxl.qmp import parse_region_spec
    from ..errors import DcdmapError
    try:
        return parse_region_spec(text)
    except DcdmapError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _heads(text: str) -> list:
    """An argparse type: head numbers, comma-separated ('0,2'), or 'none'."""
    if text.strip().lower() == "none":
        return []
    try:
        return [int(h, 0) for h in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of head numbers") from None


def add_arguments(p) -> None:
    p.add_argument("trace", metavar="TRACE", help="the trace: JSON lines, '-' for standard input")
    dev = p.add_argument_group("the device (as python -m dcdmap.cxl.qmp; a trace that starts with a device "
                               "log's 'device' entry configures it instead)")
    dev.add_argument("--region", "--regions", dest="regions", action="append", type=_region,
                     metavar="BASE:LENGTH[:BLOCK[:FLAGS]]",
                     help="a DC region, repeatable, in DPA order; FLAGS: shareable, read-only, sanitize, "
                          "comma-separated (default: one region 0:1G:2M)")
    dev.add_argument("--heads", type=count, default=None, metavar="N",
                     help="heads (hosts) of the device, 1..64 (default 1)")
    dev.add_argument("--seed", type=int, default=None, metavar="S", help="seed of the device's choices (default 0)")
    dev.add_argument("--event-log-size", type=count, default=None, metavar="N",
                     help="DC event records a head's log holds; more are dropped (default: unbounded; "
                          "QEMU's is 8)")
    qemu = p.add_argument_group("QEMU")
    qemu.add_argument("--path", default=None,
                      help="the device's QOM path (default /machine/peripheral/cxl-dcd0)")
    qemu.add_argument("--upstream", action="store_true",
                      help="upstream QEMU exactly: prescriptive add and release only, tag and host-id ignored")
    qemu.add_argument("--negotiate", action="store_true",
                      help="require qmp_capabilities before any other command, as QEMU's monitor does")
    qemu.add_argument("--ignore-command", dest="ignore", action="append", default=[], metavar="NAME",
                      help="skip QMP commands of this name (repeatable), e.g. query-status")
    linux = p.add_argument_group("Linux")
    linux.add_argument("--kernel", default="v11", metavar="v9|v10|v11",
                       help="the DCD series the hosts run (default v11)")
    linux.add_argument("--max-pending", type=count, default=None, metavar="N",
                       help="records one More chain may stage before Linux drops it (default 100)")
    linux.add_argument("--hosts", type=_heads, default=None, metavar="H,H,...",
                       help="the heads that run a Linux host (default: all; 'none' for none)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")


def main(args) -> int:
    from ..check import check_lines, read_trace
    from ..cxl.host import MAX_PENDING_EXTENTS
    from ..cxl.qmp import DEFAULT_PATH

    lines = read_trace(args.trace)
    report = check_lines(
        lines, regions=args.regions, heads=args.heads, seed=args.seed, event_log_size=args.event_log_size,
        hosts=args.hosts, path=args.path or DEFAULT_PATH, upstream=args.upstream, negotiate=args.negotiate,
        kernel=args.kernel, max_pending=args.max_pending or MAX_PENDING_EXTENTS, ignore_commands=args.ignore)
    name = "<stdin>" if args.trace == "-" else args.trace
    if args.json:
        print(json.dumps(report.to_dict(name)))
    else:
        for f in report.findings:
            print(f"{name}:{f.line}: {f.message}")
        print(report.summary(name))
    return 0 if report.ok else 1
