"""What QEMU or a Linux host would refuse in a trace of QMP commands or DC events (``dcdmap check``).

A trace is text, one JSON object a line (blank lines and lines starting with ``#`` are
skipped).  Each line is recognised by its members:

* ``{"execute": ...}``: a QMP command, answered by a :class:`~dcdmap.cxl.qmp.QmpServer` over
  the configured :class:`~dcdmap.cxl.Device` (QEMU's checks and texts);
* ``{"type": ...}``: a DC event record the device sends to one head, in the form
  :meth:`Device.events_view <dcdmap.cxl.Device.events_view>` gives (``type``, ``start``,
  ``length``, ``tag``, ``seq``, ``more``) plus ``head`` and ``region``;
* ``{"dax": "create" | "destroy", "tag": ...}``: a DAX device claiming (or giving back) a tag
  group on one head's Linux host;
* ``{"op": ...}``: an entry of a dcdmap device log (:meth:`Device.write_log
  <dcdmap.cxl.Device.write_log>`): its ``device`` entry configures the device, its add and
  release requests run as the QMP commands behind them.

After every line each head's Linux :class:`~dcdmap.cxl.Host` polls the device.  Whatever is
refused on the way becomes a :class:`Finding` on the line that caused it: QEMU refusing a
command or the host's answer, the device model unable to send a traced event, Linux refusing
or dropping an offer, a release or a DAX claim (each with the §4.1/§4.4 rule and the errno
the host model logs), or a line that is none of the above.  The checker has no rule of its
own: every refusal is the device's, the QMP layer's or the host's.

    >>> trace = [
    ...     '# add 2 MiB to head 0, tagged, then take it back',
    ...     '{"execute": "cxl-add-dynamic-capacity", "arguments": {"path": "cxl-dcd0", "host-id": 0,'
    ...     ' "selection-policy": "prescriptive", "region": 0, "tag": "00000000-0000-0000-0000-000000000001",'
    ...     ' "extents": [{"offset": 0, "len": 2097152}]}}',
    ...     '{"execute": "cxl-release-dynamic-capacity", "arguments": {"path": "cxl-dcd0", "host-id": 0,'
    ...     ' "removal-policy": "prescriptive", "region": 0, "extents": [{"offset": 0, "len": 4194304}]}}',
    ... ]
    >>> report = check_lines(trace)
    >>> [str(f) for f in report.findings]
    ['3: refused by QEMU: cannot release extent with non-existing DPA range']
    >>> report.state["heads"][0]["accepted_bytes"]
    2097152

See ``docs/check.md`` for the formats, the options and what is not modelled.
"""
from __future__ import annotations

import errno as E
import json
import sys
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .cxl import records as R
from .cxl.device import Device
from .cxl.host import MAX_PENDING_EXTENTS, Host
from .cxl.qmp import DEFAULT_PATH, QmpServer, command_from_entry
from .cxl.records import NULL_UUID, DcEventType
from .cxl.regions import Region
from .errors import ConfigurationError, CorruptDataError, DcdmapError, HostError
from .units import GiB, MiB

__all__ = ["check_lines", "read_trace", "CheckReport", "Finding", "DEFAULT_REGION", "SOURCES"]

#: The device's one region when none is given: as ``python -m dcdmap.cxl.qmp`` (0:1G:2M).
DEFAULT_REGION = Region(base=0, length=GiB, block_size=2 * MiB)

#: Who refuses: the trace itself, QEMU (a QMP command, or the host's answer to the device),
#: the device model (it cannot send a traced event), or a Linux host.
SOURCES = ("input", "qemu", "device", "linux")

_EVENT_MEMBERS = ("type", "start", "length", "tag", "seq", "more", "head", "region")
_DAX_MEMBERS = ("dax", "tag", "head")
_DAX_ACTIONS = ("create", "destroy")
# Device log entries written by the host side of a session (its mailbox commands and event
# reads).  They are not replayed: the Linux model answers the requests itself.
_HOST_SIDE_OPS = ("add_response", "release", "take_events", "get_dc_config", "get_extent_list",
                  "mailbox", "fm_mailbox")
_FM_OPS = ("add_capacity", "release_capacity")


@dataclass(frozen=True)
class Finding:
    """One step that would be refused: the trace line (1-based), who refuses it (one of
    :data:`SOURCES`), the message as printed, and when known the head (host) it concerns,
    the rule and errno of a Linux refusal, and ``code`` (the QMP error class, or the CXL
    return code of a host answer the device refused)."""

    line: int
    source: str
    message: str
    host: Optional[int] = None
    rule: Optional[str] = None
    errno: Optional[str] = None
    code: Optional[str] = None

    def __str__(self) -> str:
        return f"{self.line}: {self.message}"


@dataclass
class CheckReport:
    """The result of :func:`check_lines`: the findings in line order, what the trace held
    (``lines`` read, blank and comment lines included; ``commands`` QMP commands run;
    ``ignored`` QMP commands skipped by name; ``events`` DC event lines; ``actions`` DAX
    lines; ``log_entries`` device log lines) and the final ``state`` (capacity, and per head
    the device's pending and accepted bytes and the Linux host's groups, or None for a head
    without a host).  ``device`` and ``hosts`` are the models themselves, for a caller who
    wants to look further."""

    findings: List[Finding] = field(default_factory=list)
    lines: int = 0
    commands: int = 0
    ignored: int = 0
    events: int = 0
    actions: int = 0
    log_entries: int = 0
    state: Dict[str, Any] = field(default_factory=dict)
    device: Optional[Device] = field(default=None, repr=False)
    hosts: Dict[int, Host] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """True when nothing would be refused."""
        return not self.findings

    def summary(self, name: str = "trace") -> str:
        """One line: the findings and what was read.

            >>> CheckReport(lines=3, commands=2).summary("t.jsonl")
            't.jsonl: 0 findings in 3 lines (2 QMP commands, 0 ignored, 0 DC events, 0 DAX actions, 0 log entries)'
        """
        n = len(self.findings)
        return (f"{name}: {n} finding{'' if n == 1 else 's'} in {self.lines} lines ({self.commands} QMP commands, "
                f"{self.ignored} ignored, {self.events} DC events, {self.actions} DAX actions, "
                f"{self.log_entries} log entries)")

    def to_dict(self, name: str = "trace") -> Dict[str, Any]:
        """The report as JSON-ready data (what ``dcdmap check --json`` prints)."""
        return {"file": name, "ok": self.ok, "lines": self.lines, "commands": self.commands,
                "ignored": self.ignored, "events": self.events, "actions": self.actions,
                "log_entries": self.log_entries, "findings": [asdict(f) for f in self.findings],
                "state": self.state}


class _Malformed(Exception):
    """A line that is not one of the trace's forms (becomes an "input" finding)."""


def read_trace(path: str) -> List[str]:
    """The lines of a trace file (``"-"``: standard input), without their line ends.

    The text must be UTF-8 (a leading byte order mark is dropped).  Raises OSError for a
    file that cannot be read and CorruptDataError naming the first line that is not UTF-8.
    """
    name = "<stdin>" if path == "-" else path
    if path == "-":
        stream = getattr(sys.stdin, "buffer", None)
        data = stream.read() if stream is not None else sys.stdin.read().encode("utf-8")
    else:
        with open(path, "rb") as f:
            data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise CorruptDataError(f"{name}:{line}: not UTF-8 text (byte {data[e.start]:#04x}: {e.reason})") from None
    lines = text.removeprefix("\ufeff").split("\n")     # "\n" only: JSON text may hold U+2028
    if lines[-1] == "":
        lines.pop()
    return lines


def check_lines(lines: Iterable[str], *, regions: Optional[Sequence[Region]] = None,
                heads: Optional[int] = None, seed: Optional[int] = None,
                hosts: Optional[Iterable[int]] = None, path: str = DEFAULT_PATH,
                upstream: bool = False, negotiate: bool = False, kernel: str = "v11",
                max_pending: int = MAX_PENDING_EXTENTS, event_log_size: Optional[int] = None,
                ignore_commands: Iterable[str] = ()) -> CheckReport:
    """Run a trace through QEMU's QMP layer, the device and one Linux host per head, and
    report every step one of them would refuse (module docstring; ``docs/check.md``).

    ``regions`` (default: :data:`DEFAULT_REGION`), ``heads`` (1), ``seed`` (0) and
    ``event_log_size`` (None: unbounded; QEMU's is 8) build the device, unless the trace
    starts with a device log's ``device`` entry, which configures it instead (giving both
    is a ConfigurationError).  ``hosts`` are the heads that run a Linux host (default:
    all); a head without one never answers its offers.  ``path`` is the device's QOM path;
    ``upstream`` and ``negotiate`` are :class:`QmpServer`'s modes; ``kernel`` (``"v9"``,
    ``"v10"``, ``"v11"``) and ``max_pending`` are the hosts' ``version`` and
    ``max_pending``.  QMP commands named in ``ignore_commands`` are counted and skipped.

    Malformed lines are findings (source ``"input"``) and checking goes on.  Raises
    ConfigurationError for a device or host configuration that breaks a rule and
    CorruptDataError for a ``device`` entry that does not replay.

        >>> event = '{"type": "ADD_CAPACITY", "start": 0, "length": 2097152, "head": %d}'
        >>> report = check_lines(["[]", event % 0, event % 1], heads=2, hosts=[0])
        >>> [(f.line, f.source) for f in report.findings], report.events
        ([(1, 'input'), (3, 'input')], 2)
        >>> print(report.findings[1])
        3: not a QMP command or DC event: head 1 has no Linux host (hosts: 0)
        >>> report.state["heads"][0]["host"]["bytes"]
        2097152
    """
    checker = _Checker(regions=regions, heads=heads, seed=seed, event_log_size=event_log_size, hosts=hosts,
                       path=path, upstream=upstream, negotiate=negotiate, kernel=kernel,
                       max_pending=max_pending, ignore=frozenset(ignore_commands))
    for lineno, text in enumerate(lines, 1):
        checker.line(lineno, text)
    return checker.finish()


class _Checker:
    """One check: the models, the open event chains, and the report being built."""

    def __init__(self, **options: Any) -> None:
        self.opts = options
        self.report = CheckReport()
        self.device: Optional[Device] = None
        self.server: Optional[QmpServer] = None
        self.hosts: Dict[int, Host] = {}
        self.read: Dict[int, int] = {}                        # head -> host log notes seen
        self.overflow: List[int] = []                         # per head: event records dropped
        self.last = 0                                         # the last line that held something
        # Add Capacity records of a More chain not yet closed, per head: (line, record).
        self.chains: Dict[int, List[Tuple[int, np.ndarray]]] = {}

    # ------------------------------------------------------------------ set-up

    def start(self, device_entry: Optional[str] = None, lineno: int = 0) -> None:
        """Build the device (from the options, or from a device log's ``device`` entry), the
        QMP server and the hosts."""
        o = self.opts
        if device_entry is not None:
            if any(o[k] is not None for k in ("regions", "heads", "seed", "event_log_size")):
                raise ConfigurationError(f"line {lineno}: the trace's device entry configures the device; "
                                         "do not give regions, heads, a seed or an event log size as well")
            try:
                device = Device.replay([device_entry])      # checked as a log is checked
            except CorruptDataError as e:
                raise CorruptDataError(f"line {lineno}: the device entry does not replay ({e})") from None
        else:
            device = Device(list(o["regions"] or [DEFAULT_REGION]), heads=1 if o["heads"] is None else o["heads"],
                            seed=o["seed"] or 0, event_log_size=o["event_log_size"])
        wanted = list(range(device.nheads)) if o["hosts"] is None else sorted(set(o["hosts"]))
        for head in wanted:
            if isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < device.nheads:
                raise ConfigurationError(f"host {head!r} is not a head of the device (0..{device.nheads - 1})")
        self.server = QmpServer({o["path"]: device}, upstream=o["upstream"], negotiate=o["negotiate"])
        self.hosts = {h: Host(device, h, version=o["kernel"], max_pending=o["max_pending"]) for h in wanted}
        self.read = {h: len(host.log) for h, host in self.hosts.items()}
        self.overflow = [0] * device.nheads
        self.device = device

    # ------------------------------------------------------------------ lines

    def line(self, lineno: int, text: str) -> None:
        self.report.lines += 1
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            return
        self.last = lineno
        try:
            obj = json.loads(stripped)
        except ValueError as e:
            self.malformed(lineno, f"not JSON ({e})")
            return
        if not isinstance(obj, dict):
            self.malformed(lineno, f"a JSON {type(obj).__name__}, not an object")
            return
        if self.device is None:
            if obj.get("op") == "device":
                self.report.log_entries += 1
                self.start(stripped, lineno)
                return
            self.start()
        try:
            if "execute" in obj:
                self.qmp_line(lineno, stripped, obj)
            elif "type" in obj:
                self.event_line(lineno, obj)
            elif "dax" in obj:
                self.dax_line(lineno, obj)
            elif "op" in obj:
                self.log_line(lineno, obj)
            else:
                raise _Malformed("no 'execute', 'type', 'dax' or 'op' member")
        except _Malformed as e:
            self.malformed(lineno, str(e))
        self.poll(lineno)

    def finish(self) -> CheckReport:
        if self.device is None:
            self.start()
        for head in list(self.chains):             # More still set at the end of the trace
            self.close_chain(head, timed_out=True)
        for host in self.hosts.values():           # a chain the device never closed (its log overflowed)
            if host.staged:
                host.tick(host.now + host.add_timeout)
        self.collect(self.last)
        self.report.state = self.state()
        self.report.device, self.report.hosts = self.device, self.hosts
        return self.report

    # ------------------------------------------------------------------ QMP and device log

    def qmp_line(self, lineno: int, text: str, obj: Dict[str, Any]) -> None:
        name = obj.get("execute")
        if isinstance(name, str) and name in self.opts["ignore"]:
            self.report.ignored += 1
            return
        self.report.commands += 1
        # The raw line, so that QEMU's own parser rules (duplicate keys, NaN) apply.
        self.answer(lineno, json.loads(self.server.handle_line(text)))

    def answer(self, lineno: int, answer: Dict[str, Any]) -> None:
        err = answer.get("error")
        if err is not None:
            self.add(Finding(lineno, "qemu", f"refused by QEMU: {err['desc']}", code=err["class"]))

    def log_line(self, lineno: int, entry: Dict[str, Any]) -> None:
        """A device log entry: its add and release requests are sent again as QMP commands
        (as made; resolved to prescriptive ones for upstream QEMU)."""
        self.report.log_entries += 1
        op = entry["op"]
        if op == "device":
            raise _Malformed("a device log's 'device' entry must be the first entry of the trace")
        if op in _HOST_SIDE_OPS:
            return
        if op not in _FM_OPS:
            raise _Malformed(f"unknown device log operation {op!r}")
        bases = [r.base for r in self.device.regions]
        try:
            cmd = command_from_entry(entry, self.opts["path"], bases, resolve=self.opts["upstream"])
        except (KeyError, TypeError, ValueError, IndexError) as e:   # an entry missing what it names
            raise _Malformed(f"this {op} entry is not one a device writes ({type(e).__name__}: {e})") from None
        if cmd is None:
            raise _Malformed(f"this {op} entry has no QMP form")
        self.answer(lineno, self.server.execute(cmd))

    # ------------------------------------------------------------------ DC events

    def event_line(self, lineno: int, obj: Dict[str, Any]) -> None:
        self.report.events += 1
        head, rec = self.event_record(obj)
        kind = int(rec["event_type"])
        if kind == DcEventType.ADD_CAPACITY:
            chain = self.chains.setdefault(head, [])
            chain.append((lineno, rec))
            if not rec["flags"] & 1:
                self.close_chain(head)
            return
        if kind in (DcEventType.RELEASE_CAPACITY, DcEventType.FORCED_CAPACITY_RELEASE):
            e = rec["extent"]
            try:       # the device sends it by its own request, or cannot
                self.device.release_capacity(head, int(rec["region_index"]), [(int(e["start"]), int(e["length"]))],
                                             forced=kind == DcEventType.FORCED_CAPACITY_RELEASE)
            except DcdmapError as err:
                self.add(Finding(lineno, "device", f"refused by the device: it cannot send this release: {err}; "
                                 "not given to Linux", host=head))
                return
            self.discard_events(head)
        self.feed(head, [(lineno, rec)])

    def event_record(self, obj: Dict[str, Any]) -> Tuple[int, np.ndarray]:
        """(head, DC_EVENT_DTYPE record) of an event line; the record's fields are checked by
        :func:`~dcdmap.cxl.records.records_to_array`."""
        for key in obj:
            if key not in _EVENT_MEMBERS:
                raise _Malformed(f"DC event member {key!r} is unexpected (known: {', '.join(_EVENT_MEMBERS)})")
        for key in ("start", "length"):
            if key not in obj:
                raise _Malformed(f"DC event lacks member {key!r}")
        kind = obj["type"]
        try:
            if isinstance(kind, bool) or not isinstance(kind, (str, int)):
                raise ValueError
            kind = DcEventType[kind.replace("-", "_").upper()] if isinstance(kind, str) else DcEventType(kind)
        except (KeyError, ValueError):
            raise _Malformed(f"unknown DC event type {kind!r} (known: {', '.join(t.name for t in DcEventType)})") \
                from None
        head = self.host_head(obj)
        tag = obj.get("tag")
        try:
            tag = NULL_UUID if tag is None else uuid.UUID(tag)
        except (TypeError, ValueError, AttributeError):
            raise _Malformed(f"DC event tag {tag!r} is not a UUID") from None
        region = obj.get("region", self.region_of(obj["start"]))
        try:
            ev = R.DcEvent(kind, R.DcExtent(obj["start"], obj["length"], tag, obj.get("seq", 0)),
                           more=obj.get("more", False), host_id=head, region_index=region)
            return head, R.records_to_array([ev], R.DcEvent)[0]
        except DcdmapError as e:
            raise _Malformed(f"not a DC event record: {e}") from None

    def host_head(self, obj: Dict[str, Any]) -> int:
        """The ``head`` of an event or DAX line (default 0), which must run a Linux host."""
        head = obj.get("head", 0)
        if isinstance(head, bool) or not isinstance(head, int) or head not in self.hosts:
            raise _Malformed(f"head {head!r} has no Linux host (hosts: {', '.join(map(str, self.hosts)) or 'none'})")
        return head

    def region_of(self, dpa: Any) -> int:
        """The index of the region holding ``dpa`` (0 when none does: the device then refuses
        the range with its own text)."""
        if isinstance(dpa, int):
            for i, r in enumerate(self.device.regions):
                if r.base <= dpa < r.end:
                    return i
        return 0

    def close_chain(self, head: int, timed_out: bool = False) -> None:
        """The device makes the offer of a whole More chain (prescriptive, the chain's ranges
        in order, the first record's tag), so that the host's Add-Response has an offer to
        match; its own records are dropped and the trace's handed to Linux one by one.  A
        chain left open at the end of the trace is timed out (§3.7)."""
        chain = self.chains.pop(head)
        first, last = chain[0][0], chain[-1][0]
        ext = np.array([rec["extent"] for _, rec in chain], dtype=R.EXTENT_DTYPE)
        try:
            self.device.add_capacity(head, int(chain[0][1]["region_index"]),
                                     list(zip(ext["start"].tolist(), ext["length"].tolist())),
                                     tag=uuid.UUID(bytes=bytes(ext["tag"][0])))
        except DcdmapError as err:
            lines = f"line {first}" if first == last else f"lines {first}-{last}"
            self.add(Finding(last, "device", f"refused by the device: it cannot offer the chain of {lines}: {err}; "
                             "not given to Linux", host=head))
            return
        self.discard_events(head)
        self.feed(head, chain)
        if timed_out:
            host = self.hosts[head]
            host.tick(host.now + host.add_timeout)
            self.collect(last)

    def discard_events(self, head: int) -> None:
        """Drop the records the device queued for a traced event: Linux gets the trace's own.
        Records its log had no room for are not counted either: the trace says which arrived."""
        self.device.take_events(head)
        self.overflow[head] = self.device.event_overflow(head)

    def feed(self, head: int, records: Sequence[Tuple[int, np.ndarray]]) -> None:
        host = self.hosts[head]
        for lineno, rec in records:
            host.handle_event(rec)
            self.collect(lineno)

    # ------------------------------------------------------------------ DAX

    def dax_line(self, lineno: int, obj: Dict[str, Any]) -> None:
        self.report.actions += 1
        for key in obj:
            if key not in _DAX_MEMBERS:
                raise _Malformed(f"DAX action member {key!r} is unexpected (known: {', '.join(_DAX_MEMBERS)})")
        action, tag = obj["dax"], obj.get("tag")
        if action not in _DAX_ACTIONS:
            raise _Malformed(f"DAX action {action!r} is not one of {', '.join(_DAX_ACTIONS)}")
        if not isinstance(tag, str):
            raise _Malformed("a DAX action needs a tag: a UUID, or \"0\" for one untagged extent")
        host = self.hosts[self.host_head(obj)]
        try:
            if action == "create":
                host.create_dax(tag)
            else:
                dax = next((d for d in host.dax_devices if _tag_matches(d.uuid, tag)), None)
                if dax is None:
                    self.add(Finding(lineno, "input", f"nothing to destroy: no DAX device of host {host.head} "
                                     f"claims tag {tag}", host=host.head))
                    return
                host.destroy_dax(dax)
        except HostError as e:
            name = E.errorcode.get(e.errno, str(e.errno))
            self.add(Finding(lineno, "linux", f"refused by Linux (host {host.head}): {e} ({name})", host=host.head,
                             rule=str(e), errno=name))

    # ------------------------------------------------------------------ what the hosts did

    def poll(self, lineno: int) -> None:
        """Every host reads its events; what it refuses is the line's (and so are the event
        records the device's log had no room for)."""
        for head in range(self.device.nheads):
            dropped = self.device.event_overflow(head) - self.overflow[head]
            if dropped:
                self.overflow[head] += dropped
                self.add(Finding(lineno, "qemu", f"refused by QEMU: the event log of head {head} is full: "
                                 f"{dropped} record{'s' * (dropped != 1)} dropped", host=head))
        for host in self.hosts.values():
            host.poll()
        self.collect(lineno)

    def collect(self, lineno: int) -> None:
        """The findings of what the hosts logged since the last call.  Notes of one kind
        (the same decision and rule) make one finding, which names the first and counts the
        others: a chain of 100 extents refused for one reason is one line."""
        for head, host in self.hosts.items():
            notes = host.log[self.read[head]:]
            self.read[head] = len(host.log)
            alike: Dict[Tuple[Any, ...], List[Finding]] = {}
            for note in notes:
                if note["event"] == "release_refused" and not self.held(head, note["start"], note["length"]):
                    # Linux releases a tag group whole on its first Release record (§4.4) and
                    # refuses the group's other records, which name nothing it still holds; the
                    # device holds nothing there either, so nothing is left undone.
                    continue
                finding = _note_finding(lineno, head, note)
                if finding is not None:
                    key = (note["event"], finding.source, finding.rule, finding.errno, finding.code)
                    alike.setdefault(key, []).append(finding)
            for same in alike.values():
                more = len(same) - 1
                self.add(replace(same[0], message=f"{same[0].message} (and {more} more like it)")
                         if more else same[0])

    def held(self, head: int, start: int, length: int) -> bool:
        """Whether the device still counts any of the range as accepted by ``head``."""
        acc = self.device.accepted(head)
        return bool(((acc["start"] < start + length) & (acc["start"] + acc["length"] > start)).any())

    def add(self, finding: Finding) -> None:
        self.report.findings.append(finding)

    def malformed(self, lineno: int, why: str) -> None:
        self.add(Finding(lineno, "input", f"not a QMP command or DC event: {why}"))

    def state(self) -> Dict[str, Any]:
        dev = self.device
        heads = []
        for h in range(dev.nheads):
            pending, accepted = dev.head_capacity(h)
            entry: Dict[str, Any] = {"head": h, "pending_offers": len(dev.pending_offers(h)),
                                     "pending_bytes": pending, "accepted_bytes": accepted, "host": None}
            host = self.hosts.get(h)
            if host is not None:
                entry["host"] = {"groups": len(host.groups), "bytes": sum(g.size for g in host.groups),
                                 "dax_devices": len(host.dax_devices), "staged": host.staged}
            heads.append(entry)
        return {"capacity": dev.capacity()._asdict(), "heads": heads}


def _tag_matches(tag: uuid.UUID, text: str) -> bool:
    """Whether a DAX device's tag is the one a DAX line names ("0": untagged)."""
    if text == "0":
        return tag == NULL_UUID
    try:
        return tag == uuid.UUID(text)
    except ValueError:
        return False


def _range(start: int, length: int) -> str:
    return f"DPA [{start:#x}, {start + length:#x})"


def _tag_text(tag: Optional[str]) -> str:
    return "untagged" if tag in (None, str(NULL_UUID)) else f"tag {tag}"


def _subject(note: Dict[str, Any]) -> str:
    """What a host log note is about, in words."""
    event = note["event"]
    if event == "group_refused":
        ext = note["extents"]
        return f"{_tag_text(note['tag'])} group of {len(ext)} extent{'s' * (len(ext) != 1)} " \
               f"from {_range(*ext[0])}"
    if event == "extent_refused":
        return f"extent {_range(note['start'], note['length'])}, {_tag_text(note['tag'])}"
    if event in ("chain_overflow", "add_timeout"):
        n = note["dropped"]
        return f"{n} record{'s' * (n != 1)} of the More chain dropped, the offer rejected"
    if event == "group_offline":
        return f"{_tag_text(note['tag'])} group taken offline again"
    if event in ("release_no_region", "release_refused"):
        return f"release of {_range(note['start'], note['length'])}"
    if event == "release_deferred":
        return f"release of the {_tag_text(note['tag'])} group"
    if event == "forced_release_ignored":
        return f"forced release of {_range(note['start'], note['length'])}: the host keeps using it"
    if event == "event_unhandled":
        return f"event type {note['type']}"
    return event


def _note_finding(lineno: int, head: int, note: Dict[str, Any]) -> Optional[Finding]:
    """The finding a host log note makes: a note naming a rule is a Linux refusal (the host
    logs one for each decision against the device's offer or request); an answer the device
    did not take (status other than SUCCESS) is a QEMU refusal."""
    status = note.get("status", "SUCCESS")
    if status != "SUCCESS":
        what = "Add-Response" if note["event"] == "add_response" else \
            f"Release DC of {_range(note['start'], note['length'])}"
        return Finding(lineno, "qemu", f"refused by QEMU: host {head}'s {what}: {status}", host=head, code=status)
    rule = note.get("rule")
    if rule is None:
        return None
    errno = note.get("errno")
    because = f"{rule} ({errno})" if errno else rule
    return Finding(lineno, "linux", f"refused by Linux (host {head}): {because}: {_subject(note)}", host=head,
                   rule=rule, errno=errno)
