"""The same workload through each way of presenting pool capacity to VMs, side by side.

:func:`compare` runs one :class:`~dcdmap.orchestrator.Orchestrator` per presentation on the
same workload and configuration, and gathers what each cost the guests
(:class:`~dcdmap.orchestrator.GuestTotals`) and the run (:class:`~dcdmap.orchestrator.Report`)
into a :class:`Comparison`: a text table (metrics as rows, presentations as columns), JSON,
CSV and a PNG chart.  This answers the RFC's question (rfc-and-users.md §1.6): which
presentation gives a VM tagged, removable, discoverable capacity, at what cost in guest
address space, guest objects and control operations.  ``docs/tutorial.md`` reads the
numbers of the default run.

    >>> from dcdmap.workload import generate
    >>> c = compare(generate("default", seed=0, duration=60_000), ["hotplug", "type3"])
    >>> [r.presentation for r in c.rows]
    ['hotplug', 'type3']
    >>> c.row("type3").tag_discoverable, c.row("hotplug").tag_discoverable
    (True, False)
    >>> c.table().splitlines()[0].split()
    ['metric', 'hotplug', 'type3']
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO

from .errors import ConfigurationError
from .orchestrator import PRESENTATIONS, Config, Orchestrator, Report
from .units import format_size
from .workload import Workload

__all__ = ["compare", "Comparison", "Row", "METRICS"]


@dataclass
class Row:
    """One presentation's results.  Bytes are ints; ``seconds`` is the wall time of its run
    (the only number that is not a pure function of the workload and configuration)."""
    presentation: str
    vms: int = 0
    presented: int = 0
    gpa_used: int = 0
    gpa_wasted: int = 0
    objects: int = 0
    objects_by_kind: Dict[str, int] = field(default_factory=dict)
    control_ops: int = 0
    control_ops_by_kind: Dict[str, int] = field(default_factory=dict)
    removal: str = ""
    takeback_requested: int = 0
    takeback_returned: int = 0
    migrations: Dict[str, int] = field(default_factory=dict)
    tag_discoverable: bool = False
    shared_out_of_ram: bool = False
    refusals: int = 0
    seconds: float = 0.0

    @property
    def takeback_percent(self) -> Optional[float]:
        """Bytes returned by running guests, as a percentage of those asked back (None if
        nothing was asked)."""
        if not self.takeback_requested:
            return None
        return 100.0 * self.takeback_returned / self.takeback_requested

    @classmethod
    def of(cls, presentation: str, report: Report, seconds: float) -> "Row":
        g = report.guest
        assert g is not None
        return cls(presentation, g.vms, g.presented, g.gpa_used, g.gpa_wasted, sum(g.objects.values()),
                   dict(g.objects), sum(g.control_ops.values()), dict(g.control_ops), g.removal,
                   g.takeback_requested, g.takeback_returned, dict(report.migrations), g.tag_discoverable,
                   g.shared_out_of_ram, len(report.refusals), seconds)


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def _yes(b: bool) -> str:
    return "yes" if b else "no"


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.0f}%"


def _kinds(d: Dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: (-kv[1], kv[0])) if v)


#: The table's rows: (label, how a Row shows it).
METRICS: List[tuple] = [
    ("presentations set up", lambda r: str(r.vms)),
    ("capacity presented", lambda r: _gib(r.presented)),
    ("guest address space used", lambda r: _gib(r.gpa_used)),
    ("  per byte presented", lambda r: f"{r.gpa_used / r.presented:.2f}x" if r.presented else "-"),
    ("guest address space wasted", lambda r: format_size(r.gpa_wasted, exact=False)),
    ("guest objects", lambda r: str(r.objects)),
    ("control operations", lambda r: str(r.control_ops)),
    ("take-back", lambda r: r.removal),
    ("taken back from running VMs", lambda r: f"{_pct(r.takeback_percent)} of {_gib(r.takeback_requested)}"
                                              if r.takeback_requested else "-"),
    ("migrations blocked", lambda r: str(r.migrations.get("blocked", 0))),
    ("tag discoverable (R1)", lambda r: _yes(r.tag_discoverable)),
    ("shared kept out of RAM (R3)", lambda r: _yes(r.shared_out_of_ram)),
    ("refusals", lambda r: str(r.refusals)),
    ("run time", lambda r: f"{r.seconds:.2f} s"),
]


@dataclass
class Comparison:
    """The rows of one comparison, and what they ran on (``workload``: the preset, seed and
    summary; ``config``: the orchestrator's knobs; ``run``: facts common to every run)."""
    workload: Dict[str, Any]
    config: Dict[str, Any]
    run: Dict[str, Any]
    rows: List[Row]

    def row(self, presentation: str) -> Row:
        for r in self.rows:
            if r.presentation == presentation:
                return r
        raise KeyError(presentation)

    def table(self) -> str:
        """Metrics as rows, presentations as columns, in plain text."""
        cells = [[label] + [show(r) for r in self.rows] for label, show in METRICS]
        head = ["metric"] + [r.presentation for r in self.rows]
        width = max(12, *(len(c) for row in cells + [head] for c in row[1:])) + 2
        label_w = max(len(m[0]) for m in METRICS) + 2
        return "\n".join(row[0].ljust(label_w) + "".join(c.rjust(width) for c in row[1:])
                         for row in [head] + cells)

    def details(self) -> str:
        """Guest objects and control operations by kind, one line per presentation."""
        return "\n".join(f"{r.presentation}: objects: {_kinds(r.objects_by_kind) or 'none'}; "
                         f"control operations: {_kinds(r.control_ops_by_kind) or 'none'}" for r in self.rows)

    def to_dict(self) -> Dict[str, Any]:
        return {"workload": self.workload, "config": self.config, "run": self.run,
                "rows": [{**dataclasses.asdict(r), "takeback_percent": r.takeback_percent} for r in self.rows]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def write_csv(self, file: TextIO) -> None:
        """One line per presentation; the by-kind dicts as ``kind=n;kind=n``."""
        names = [f.name for f in dataclasses.fields(Row)] + ["takeback_percent"]
        w = csv.writer(file, lineterminator="\n")
        w.writerow(names)
        for r in self.rows:
            d = {**dataclasses.asdict(r), "takeback_percent": r.takeback_percent}
            w.writerow([";".join(f"{k}={v}" for k, v in d[n].items()) if isinstance(d[n], dict) else
                        ("" if d[n] is None else d[n]) for n in names])

    def csv(self) -> str:
        buf = io.StringIO()
        self.write_csv(buf)
        return buf.getvalue()

    def plot(self, path: str) -> None:
        """A PNG of the numeric metrics, one panel each (:mod:`dcdmap.plot`)."""
        from .plot import Panel, small_multiples
        rows = self.rows
        nan = float("nan")
        panels = [
            Panel("guest address space used (GiB)", [r.gpa_used / 2**30 for r in rows],
                  [_gib(r.gpa_used) for r in rows]),
            Panel("guest address space wasted (MiB)", [r.gpa_wasted / 2**20 for r in rows],
                  [format_size(r.gpa_wasted, exact=False) for r in rows]),
            Panel("guest objects", [r.objects for r in rows]),
            Panel("control operations", [r.control_ops for r in rows]),
            Panel("taken back from running VMs (%)",
                  [nan if r.takeback_percent is None else r.takeback_percent for r in rows],
                  [_pct(r.takeback_percent) for r in rows]),
            Panel("run time (s)", [r.seconds for r in rows], [f"{r.seconds:.2f} s" for r in rows]),
        ]
        w = self.workload
        small_multiples(path, f"dcdmap compare: preset {w['preset']}, seed {w['seed']}, {w['hosts']} hosts, "
                              f"{w['vms']} VMs", [r.presentation for r in rows], panels)


def compare(workload: Workload, presentations: Sequence[str] = PRESENTATIONS,
            config: Optional[Config] = None,
            progress: Optional[Callable[[int], None]] = None,
            keep: Optional[Callable[[str, Orchestrator], None]] = None) -> Comparison:
    """Run ``workload`` once per presentation (in the order given) with ``config`` (its
    ``presentation`` is replaced) and compare.  ``progress(events_done)`` counts events over
    all runs; ``keep(presentation, orchestrator)`` sees each finished run (to write its
    trace, say).  ConfigurationError for an unknown or repeated presentation."""
    if not presentations:
        raise ConfigurationError("no presentation to compare")
    for p in presentations:
        if p not in PRESENTATIONS:
            raise ConfigurationError(f"unknown presentation {p!r} (known: {', '.join(PRESENTATIONS)})")
    if len(set(presentations)) != len(presentations):
        raise ConfigurationError("a presentation is named twice")
    config = config or Config()
    n = len(workload.events)
    rows, run = [], {}
    for i, p in enumerate(presentations):
        o = Orchestrator(workload, dataclasses.replace(config, presentation=p))
        t0 = time.perf_counter()
        report = o.run(None if progress is None else (lambda k, i=i: progress(i * n + k)))
        seconds = time.perf_counter() - t0
        if progress is not None:
            progress((i + 1) * n)
        rows.append(Row.of(p, report, seconds))
        if not run:
            run = {"bytes_offered": report.bytes_offered, "bytes_accepted": report.bytes_accepted,
                   "extents_offered": report.extents_offered, "peak_extents": report.peak_extents,
                   "shared_verified": report.shared_verified, "shared_consistent": report.shared_consistent,
                   "deferred": report.deferred, "forced": report.forced, "kexecs": report.kexecs}
        if keep is not None:
            keep(p, o)
    s = workload.summary()
    info = {"preset": workload.preset, "seed": workload.seed, "hosts": workload.params.get("hosts"),
            "pool_size": workload.params.get("pool_size"), "vms": s["vms"], "events": len(workload.events),
            "allocations": s["allocations"], "extents": s["extents"], "peak_bytes": s["peak_bytes"]}
    return Comparison(info, config.params(), run, rows)
