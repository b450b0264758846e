"""QEMU's QMP interface to Dynamic Capacity, over a :class:`~dcdmap.cxl.Device` (reference §5.1–5.2).

:class:`QmpServer` answers the two DC commands of QEMU's ``qapi/cxl.json``
(``cxl-add-dynamic-capacity``, ``cxl-release-dynamic-capacity``) and ``qmp_capabilities``,
as QEMU's QMP monitor answers them: JSON in, JSON out, the same error classes and texts.
The layer is thin (STYLE 14).  It does what QEMU's QMP code does before it reaches the
device: the QMP envelope checks (``qapi/qmp-dispatch.c``), the QAPI argument checks
(``qapi/qobject-input-visitor.c``: missing, mistyped and unexpected members), the policy
gates of upstream QEMU, the QOM path lookup, and offset → DPA (``DPA = region base +
offset``).  Every region and extent rule (region index, zero length, alignment, region end,
overlap, pending, accepted, backed) is the device's, with QEMU's texts; none is repeated here.

Two modes:

* ``upstream=True``: upstream QEMU exactly.  Only prescriptive add and release; the tag,
  the host id and ``sanitize-on-release`` are ignored (the device is driven as head 0,
  untagged); ``forced-removal: true`` is refused.
* ``upstream=False`` (the default): the extended model.  Every selection and removal
  policy; ``host-id`` selects the head; the tag (a UUID) tags the capacity; forced removal
  and ``sanitize-on-release`` reach the device.  QAPI has no length member, so ``free`` and
  ``contiguous`` ask for the sum of the ``len`` of the extents given (their offsets are
  not used).

The reverse direction, :func:`add_command`, :func:`release_command` and
:func:`commands_from_log`, turns device operations back into QMP commands, so a session
recorded on a dcdmap device can drive QEMU (or another :class:`QmpServer`).

    >>> from dcdmap.cxl import Device, Region
    >>> dev = Device([Region(base=0, length=1 << 30)])
    >>> qmp = QmpServer({"/machine/peripheral/cxl-dcd0": dev}, upstream=True)
    >>> qmp.handle_line('{"execute": "qmp_capabilities"}')
    '{"return": {}}'
    >>> cmd = add_command("/machine/peripheral/cxl-dcd0", 0, 0, [(0, 2 << 20)], region_base=0)
    >>> qmp.execute(cmd)
    {'return': {}}
    >>> [o.extents["start"].tolist() for o in dev.pending_offers(0)]
    [[0]]
    >>> qmp.execute(cmd)["error"]["desc"]
    'cannot add DPA again while still pending'

``python -m dcdmap.cxl.qmp`` serves one device on stdin/stdout, one command per line
(:func:`main`).
"""
from __future__ import annotations

import argparse
import json
import sys
import uuid
from typing import IO, Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from ..errors import ConfigurationError, DcdmapError, InputTypeError, InvalidRangeError
from ..units import GiB, MiB, parse_size
from .device import Device
from .records import NULL_UUID, RemovalPolicy, SelectionPolicy
from .regions import Region

__all__ = [
    "QmpServer", "add_command", "release_command", "command_from_entry", "commands_from_log",
    "parse_region_spec", "main", "DEFAULT_PATH", "ADD_COMMAND", "RELEASE_COMMAND",
    "SELECTION_POLICIES", "REMOVAL_POLICIES",
]

DEFAULT_PATH = "/machine/peripheral/cxl-dcd0"
ADD_COMMAND = "cxl-add-dynamic-capacity"
RELEASE_COMMAND = "cxl-release-dynamic-capacity"
_CAPABILITIES = "qmp_capabilities"
_U64 = (1 << 64) - 1
_GENERIC = "GenericError"
_NOT_FOUND = "CommandNotFound"
_NO_ID = object()


# --------------------------------------------------------------------------------------------
# The QAPI schema of the commands, and QEMU's input visitor over it
# --------------------------------------------------------------------------------------------

class _Uint(NamedTuple):
    bits: int                       # 8, 16 or 64


class _Enum(NamedTuple):
    values: Tuple[str, ...]


class _List(NamedTuple):
    item: Any


class _Struct(NamedTuple):
    members: Tuple[Tuple[str, Any, bool], ...]      # (name, type, required), in schema order


_STR, _BOOL = "str", "bool"

#: QAPI ``CxlExtentSelectionPolicy`` and ``CxlExtentRemovalPolicy``; the value order is the
#: wire encoding, as in :class:`SelectionPolicy` and :class:`RemovalPolicy`.
SELECTION_POLICIES = ("free", "contiguous", "prescriptive", "enable-shared-access")
REMOVAL_POLICIES = ("tag-based", "prescriptive")

_EXTENT = _Struct((("offset", _Uint(64), True), ("len", _Uint(64), True)))
_SCHEMA: Dict[str, _Struct] = {
    ADD_COMMAND: _Struct((
        ("path", _STR, True), ("host-id", _Uint(16), True),
        ("selection-policy", _Enum(SELECTION_POLICIES), True), ("region", _Uint(8), True),
        ("tag", _STR, False), ("extents", _List(_EXTENT), True))),
    RELEASE_COMMAND: _Struct((
        ("path", _STR, True), ("host-id", _Uint(16), True),
        ("removal-policy", _Enum(REMOVAL_POLICIES), True), ("forced-removal", _BOOL, False),
        ("sanitize-on-release", _BOOL, False), ("region", _Uint(8), True),
        ("tag", _STR, False), ("extents", _List(_EXTENT), True))),
    _CAPABILITIES: _Struct((("enable", _List(_Enum(("oob",))), False),)),
}


class _Fail(Exception):
    """A QMP error answer: its class and its text."""

    def __init__(self, desc: str, cls: str = _GENERIC) -> None:
        super().__init__(desc)
        self.desc = desc
        self.cls = cls


def _visit(value: Any, typ: Any, name: str, full: str) -> Any:
    """Check and convert one value as QEMU's QObject input visitor does.

    ``full`` is the member's path (``extents[0].offset``), which QEMU prints for missing
    members and wrong types; ``name`` its bare name, which QEMU prints instead for uintN
    range errors and unknown enum values (``"null"`` for a list element).
    """
    if typ is _STR or isinstance(typ, _Enum):
        if not isinstance(value, str):
            raise _Fail(f"Invalid parameter type for '{full}', expected: string")
        if isinstance(typ, _Enum) and value not in typ.values:
            raise _Fail(f"Parameter '{name}' does not accept value '{value}'")
        return value
    if typ is _BOOL:
        if not isinstance(value, bool):
            raise _Fail(f"Invalid parameter type for '{full}', expected: boolean")
        return value
    if isinstance(typ, _Uint):
        # JSON integers in int64 or uint64 range are numbers; QEMU accepts negative int64 for
        # a uint64 "for backward compatibility" and wraps it.  Anything else (floats, bigger
        # integers, which QEMU's parser turns into doubles) is refused.
        if isinstance(value, bool) or not isinstance(value, int) or not -(1 << 63) <= value <= _U64:
            raise _Fail(f"Parameter '{full}' expects uint64")
        value &= _U64
        if typ.bits < 64 and value >= 1 << typ.bits:
            raise _Fail(f"Parameter '{name}' expects uint{typ.bits}_t")
        return value
    if isinstance(typ, _List):
        if not isinstance(value, list):
            raise _Fail(f"Invalid parameter type for '{full}', expected: array")
        return [_visit(v, typ.item, "null", f"{full}[{i}]") for i, v in enumerate(value)]
    assert isinstance(typ, _Struct)
    if not isinstance(value, dict):
        raise _Fail(f"Invalid parameter type for '{full}', expected: object")
    return _visit_struct(value, typ, full)


def _visit_struct(obj: Dict[str, Any], typ: _Struct, prefix: str) -> Dict[str, Any]:
    """Members in schema order (the first missing or mistyped one fails), then members the
    schema lacks (QEMU names one of them; here the first in input order)."""
    out: Dict[str, Any] = {}
    dot = f"{prefix}." if prefix else ""
    for name, member, required in typ.members:
        if name in obj:
            out[name] = _visit(obj[name], member, name, dot + name)
        elif required:
            raise _Fail(f"Parameter '{dot + name}' is missing")
    known = {m[0] for m in typ.members}
    for key in obj:
        if key not in known:
            raise _Fail(f"Parameter '{dot + key}' is unexpected")
    return out


def _envelope(request: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """QEMU ``qmp_dispatch_check_obj``: the members of a command object (input order)."""
    for key, value in request.items():
        if key == "execute":
            if not isinstance(value, str):
                raise _Fail("QMP input member 'execute' must be a string")
        elif key == "arguments":
            if not isinstance(value, dict):
                raise _Fail("QMP input member 'arguments' must be an object")
        elif key != "id":
            raise _Fail(f"QMP input member '{key}' is unexpected")
    if "execute" not in request:
        raise _Fail("QMP input lacks member 'execute'")
    return request["execute"], request.get("arguments", {})


def _no_duplicates(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError("duplicate key")       # QEMU's parser refuses them too
        out[key] = value
    return out


def _no_constants(text: str) -> Any:
    raise ValueError(f"invalid keyword '{text}'")    # NaN, Infinity: not JSON


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------

class QmpServer:
    """QEMU's QMP monitor for one or more DC devices, by QOM path.

    ``devices`` maps absolute QOM paths (``"/machine/peripheral/cxl-dcd0"``) to devices.
    A command's ``path`` is resolved as QEMU's ``object_resolve_path_type`` does: an
    absolute path exactly (empty components ignored), a partial path (no leading ``/``,
    e.g. ``"cxl-dcd0"``) when it names the tail of exactly one device's path.

    ``upstream`` selects upstream QEMU's behaviour or the extended model (module
    docstring).  ``negotiate`` makes the session start in QMP's capabilities negotiation
    mode, as QEMU's monitor does: until ``qmp_capabilities`` every command is answered
    CommandNotFound "Expecting capabilities negotiation with 'qmp_capabilities'", and a
    second ``qmp_capabilities`` is refused.  Without it (the default) ``qmp_capabilities``
    is accepted at any time and changes nothing.

    Not thread-safe (the devices are not).

        >>> from dcdmap.cxl import Device, Region
        >>> dev = Device([Region(base=1 << 30, length=1 << 30)], heads=2)
        >>> qmp = QmpServer({"/machine/peripheral/cxl-dcd0": dev})
        >>> args = {"path": "cxl-dcd0", "host-id": 1, "selection-policy": "prescriptive",
        ...         "region": 0, "extents": [{"offset": 0, "len": 4 << 20}]}
        >>> qmp.execute({"execute": "cxl-add-dynamic-capacity", "arguments": args, "id": 7})
        {'return': {}, 'id': 7}
        >>> dev.pending_offers(1)[0].extents["start"].tolist()     # DPA = base + offset
        [1073741824]
        >>> qmp.execute({"execute": "cxl-add-dynamic-capacity", "arguments": {**args, "region": 1}})
        {'error': {'class': 'GenericError', 'desc': 'region id is too large'}}
    """

    def __init__(self, devices: Mapping[str, Device], *, upstream: bool = False,
                 negotiate: bool = False) -> None:
        self._devices: Dict[Tuple[str, ...], Device] = {}
        self._names: Dict[str, Device] = {}
        for path, dev in dict(devices).items():
            if not isinstance(path, str) or not path.startswith("/"):
                raise ConfigurationError(f"a device path must be an absolute QOM path, not {path!r}")
            if not isinstance(dev, Device):
                raise ConfigurationError(f"{path!r} maps to a {type(dev).__name__}, not a Device")
            key = _components(path)
            if not key or key in self._devices:
                raise ConfigurationError(f"device path {path!r} is empty or given twice")
            self._devices[key] = dev
            self._names[path] = dev
        self.upstream = bool(upstream)
        self._negotiate = bool(negotiate)
        self._negotiating = self._negotiate
        self._commands = {ADD_COMMAND: self._add, RELEASE_COMMAND: self._release,
                          _CAPABILITIES: self._capabilities}

    @property
    def devices(self) -> Dict[str, Device]:
        """The devices by the paths they were given under (a copy)."""
        return dict(self._names)

    @staticmethod
    def greeting() -> Dict[str, Any]:
        """The banner a QMP monitor sends first (dcdmap answers as a QEMU 9.1 without OOB).

        >>> QmpServer.greeting()["QMP"]["capabilities"]
        []
        """
        return {"QMP": {"version": {"qemu": {"micro": 0, "minor": 1, "major": 9}, "package": "dcdmap"},
                        "capabilities": []}}

    # ---------------------------------------------------------------- entry points

    def execute(self, request: Any) -> Dict[str, Any]:
        """Answer one parsed QMP request: ``{"return": {}}`` or ``{"error": {"class", "desc"}}``,
        with the request's ``id`` (any JSON value) echoed when it has one.

        Device refusals are GenericError with the device's text (QEMU's, §5.2).  A failed
        command changes no device state.  Never raises for bad input.
        """
        rid: Any = _NO_ID
        try:
            if not isinstance(request, dict):
                raise _Fail("QMP input must be a JSON object")
            rid = request.get("id", _NO_ID)
            name, args = _envelope(request)
            handler = self._commands.get(name)
            if self._negotiating and name != _CAPABILITIES:
                raise _Fail("Expecting capabilities negotiation with 'qmp_capabilities'", _NOT_FOUND)
            if handler is None:
                raise _Fail(f"The command {name} has not been found", _NOT_FOUND)
            answer: Dict[str, Any] = {"return": handler(_visit_struct(args, _SCHEMA[name], ""))}
        except _Fail as e:
            answer = {"error": {"class": e.cls, "desc": e.desc}}
        if rid is not _NO_ID:
            answer["id"] = rid
        return answer

    def handle_line(self, line: str) -> Optional[str]:
        """Answer one line holding one JSON request, as one line of JSON (no newline).

        A blank line gets no answer (None).  Text that is not one JSON value is answered
        GenericError "JSON parse error, <reason>", the prefix QEMU's parser uses; the reason
        is Python's (QEMU words its own reasons differently).  As in QEMU, duplicate keys,
        ``NaN`` and ``Infinity`` are parse errors.

            >>> QmpServer({}).handle_line('{"execute": ')
            '{"error": {"class": "GenericError", "desc": "JSON parse error, Expecting value: line 1 column 13 (char 12)"}}'
        """
        if not line.strip():
            return None
        try:
            request = json.loads(line, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
        except ValueError as e:
            return json.dumps({"error": {"class": _GENERIC, "desc": f"JSON parse error, {e}"}})
        return json.dumps(self.execute(request))

    def serve(self, infile: IO[str], outfile: IO[str]) -> int:
        """Answer ``infile`` line by line on ``outfile`` until end of input; 0.  With
        ``negotiate``, the greeting is written first."""
        if self._negotiate:
            outfile.write(json.dumps(self.greeting()) + "\n")
            outfile.flush()
        for line in iter(infile.readline, ""):
            answer = self.handle_line(line)
            if answer is not None:
                outfile.write(answer + "\n")
                outfile.flush()
        return 0

    # ---------------------------------------------------------------- commands

    def _capabilities(self, args: Dict[str, Any]) -> Dict[str, Any]:
        """QEMU ``qmp_qmp_capabilities``: leave negotiation mode; OOB is never offered."""
        if self._negotiate and not self._negotiating:
            raise _Fail("Capabilities negotiation is already complete, command ignored", _NOT_FOUND)
        if args.get("enable"):
            raise _Fail("Capability oob not available")
        self._negotiating = False
        return {}

    def _resolve(self, path: str) -> Device:
        """QEMU ``object_resolve_path_type(path, TYPE_CXL_TYPE3, NULL)``."""
        parts = _components(path)
        if path.startswith("/"):
            dev = self._devices.get(parts)
        else:
            hits = [d for key, d in self._devices.items() if parts and key[-len(parts):] == parts]
            dev = hits[0] if len(hits) == 1 else None
        if dev is None:
            raise _Fail("Unable to resolve CXL type 3 device")
        return dev

    @staticmethod
    def _dpa_extents(dev: Device, region: int, extents: List[Dict[str, int]]) -> List[Tuple[int, int]]:
        """(DPA, len) pairs: DPA = region base + offset, in QEMU's u64 arithmetic.  For a
        region the device lacks, the offsets pass unchanged: the device refuses the region
        before it reads them."""
        base = dev.regions[region].base if region < len(dev.regions) else 0
        return [((base + e["offset"]) & _U64, e["len"]) for e in extents]

    def _add(self, a: Dict[str, Any]) -> Dict[str, Any]:
        policy = a["selection-policy"]
        if self.upstream and policy != "prescriptive":
            raise _Fail("Selection policy not supported")   # QEMU checks this before the path
        dev = self._resolve(a["path"])
        region = a["region"]
        extents = self._dpa_extents(dev, region, a["extents"])
        try:
            if self.upstream:
                dev.add_capacity(0, region, extents)
            elif policy in ("free", "contiguous"):
                # The length is this layer's reading of QAPI (the sum of the lens), so its
                # bound is this layer's too: a length is a u64 (FM API Initiate DC Add).
                length = sum(n for _, n in extents)
                if length > _U64:
                    raise _Fail(f"{policy} selection: the extents' lengths add up to more than 2**64 - 1")
                dev.add_capacity(a["host-id"], region, (), policy=_member(SelectionPolicy, policy),
                                 tag=a.get("tag"), length=length)
            else:
                dev.add_capacity(a["host-id"], region, extents, policy=_member(SelectionPolicy, policy),
                                 tag=a.get("tag"))
        except DcdmapError as e:
            raise _Fail(str(e)) from None
        return {}

    def _release(self, a: Dict[str, Any]) -> Dict[str, Any]:
        policy = a["removal-policy"]
        forced = a.get("forced-removal", False)
        if self.upstream:                                   # QEMU checks these before the path
            if forced:
                raise _Fail("Forced removal not supported yet")
            if policy != "prescriptive":
                raise _Fail("Removal policy not supported")
        dev = self._resolve(a["path"])
        region = a["region"]
        extents = self._dpa_extents(dev, region, a["extents"])
        try:
            if self.upstream:
                dev.release_capacity(0, region, extents)
            else:
                dev.release_capacity(a["host-id"], region, extents, policy=_member(RemovalPolicy, policy),
                                     tag=a.get("tag"), forced=forced,
                                     sanitize=a.get("sanitize-on-release", False))
        except DcdmapError as e:
            raise _Fail(str(e)) from None
        return {}


def _components(path: str) -> Tuple[str, ...]:
    return tuple(p for p in path.split("/") if p)


def _member(kind: Any, qapi_name: str) -> Any:
    """The enum member of a QAPI policy name (the device gets members, as native callers
    pass them, so its log reads the same whichever way a request came)."""
    return kind[qapi_name.replace("-", "_").upper()]


# --------------------------------------------------------------------------------------------
# Device operations -> QMP commands
# --------------------------------------------------------------------------------------------

def _qapi_policy(kind: Any, value: Any) -> str:
    """The QAPI spelling of a policy given as a member, its value, or either spelling of its
    name (``"enable-shared-access"``, ``"ENABLE_SHARED_ACCESS"``)."""
    member = None
    if isinstance(value, kind):
        member = value
    elif isinstance(value, str):
        member = kind.__members__.get(value.replace("-", "_").upper())
    elif isinstance(value, int) and not isinstance(value, bool):
        member = next((m for m in kind if m.value == value), None)
    if member is None:
        raise InputTypeError(f"{value!r} is not a {kind.__name__}")
    return member.name.lower().replace("_", "-")


def _qapi_tag(tag: Any) -> Optional[str]:
    """None for no tag (None or the null UUID), else the tag as text."""
    if tag is None:
        return None
    if isinstance(tag, (bytes, bytearray)) and len(tag) == 16:
        tag = uuid.UUID(bytes=bytes(tag))
    if isinstance(tag, uuid.UUID):
        return None if tag == NULL_UUID else str(tag)
    if isinstance(tag, str):
        return tag
    raise InputTypeError(f"a tag is a UUID or a str, not {type(tag).__name__}")


def _offsets(extents: Any, region_base: int) -> List[Dict[str, int]]:
    """QAPI extents from (DPA, length) pairs or a structured array with start/length."""
    names = getattr(getattr(extents, "dtype", None), "names", None)
    pairs = zip(extents["start"].tolist(), extents["length"].tolist()) if names else extents
    out = []
    for pair in pairs:
        try:
            dpa, length = (int(x) for x in pair)
        except (TypeError, ValueError):
            raise InputTypeError(f"extents must be (DPA, length) pairs, not {pair!r}") from None
        if not region_base <= dpa <= _U64 or not 0 <= length <= _U64:
            raise InvalidRangeError(f"extent ({dpa:#x}, {length:#x}) is not a u64 range from the "
                                    f"region base {region_base:#x}")
        out.append({"offset": dpa - region_base, "len": length})
    return out


def _command(name: str, args: Dict[str, Any], id: Any) -> Dict[str, Any]:
    """The command object, its arguments checked against the schema (the same check the
    server makes, so a generated command is always well-formed)."""
    try:
        _visit_struct(args, _SCHEMA[name], "")
    except _Fail as e:
        raise InvalidRangeError(e.desc) from None
    cmd: Dict[str, Any] = {"execute": name, "arguments": args}
    if id is not None:
        cmd["id"] = id
    return cmd


def add_command(path: str, head: int, region: int, extents: Any = (), *, region_base: int,
                policy: Union[SelectionPolicy, int, str] = "prescriptive", tag: Any = None,
                length: Optional[int] = None, id: Any = None) -> Dict[str, Any]:
    """The ``cxl-add-dynamic-capacity`` command for a :meth:`Device.add_capacity` call.

    ``extents`` are (DPA, length) pairs (or an EXTENT_DTYPE array); each becomes
    ``{"offset": DPA - region_base, "len": length}``.  ``length`` (free and contiguous
    selection only) becomes the one extent ``{"offset": 0, "len": length}``, which the
    extended server reads back as the length.  A tag that is None or the null UUID is
    left out.  ``id`` (when not None) is the command's id.

    Raises InvalidRangeError for a DPA below ``region_base``, a value past u64, a head
    past u16 or a region past u8; InputTypeError for a policy or tag it cannot read.

        >>> add_command("/machine/peripheral/cxl-dcd0", 0, 1, [(0x5000_0000, 2 << 20)],
        ...             region_base=0x4000_0000)["arguments"]["extents"]
        [{'offset': 268435456, 'len': 2097152}]
        >>> add_command("cxl-dcd0", 0, 0, region_base=0, policy="free", length=8 << 20)["arguments"]
        {'path': 'cxl-dcd0', 'host-id': 0, 'selection-policy': 'free', 'region': 0, 'extents': [{'offset': 0, 'len': 8388608}]}
    """
    pol = _qapi_policy(SelectionPolicy, policy)
    items = _offsets(extents, region_base)
    if length is not None:
        if pol not in ("free", "contiguous") or items:
            raise InputTypeError("length goes with free or contiguous selection and no extents")
        items = [{"offset": 0, "len": length}]
    args: Dict[str, Any] = {"path": path, "host-id": head, "selection-policy": pol, "region": region}
    t = _qapi_tag(tag)
    if t is not None:
        args["tag"] = t
    args["extents"] = items
    return _command(ADD_COMMAND, args, id)


def release_command(path: str, head: int, region: int, extents: Any = (), *, region_base: int,
                    policy: Union[RemovalPolicy, int, str] = "prescriptive", tag: Any = None,
                    forced: bool = False, sanitize: bool = False, id: Any = None) -> Dict[str, Any]:
    """The ``cxl-release-dynamic-capacity`` command for a :meth:`Device.release_capacity`
    call; extents, tag and id as in :func:`add_command`.  ``forced-removal`` and
    ``sanitize-on-release`` are written only when true (QEMU reads a missing one as false).

        >>> release_command("cxl-dcd0", 0, 0, [(2 << 20, 2 << 20)], region_base=0, forced=True)["arguments"]
        {'path': 'cxl-dcd0', 'host-id': 0, 'removal-policy': 'prescriptive', 'forced-removal': True, 'region': 0, 'extents': [{'offset': 2097152, 'len': 2097152}]}
    """
    args: Dict[str, Any] = {"path": path, "host-id": head,
                            "removal-policy": _qapi_policy(RemovalPolicy, policy)}
    if forced:
        args["forced-removal"] = True
    if sanitize:
        args["sanitize-on-release"] = True
    args["region"] = region
    t = _qapi_tag(tag)
    if t is not None:
        args["tag"] = t
    args["extents"] = _offsets(extents, region_base)
    return _command(RELEASE_COMMAND, args, id)


def command_from_entry(entry: Dict[str, Any], path: str, region_bases: Sequence[int], *,
                       resolve: bool = False) -> Optional[Dict[str, Any]]:
    """The QMP command for one :attr:`Device.log` entry, or None when the entry is not an
    ``add_capacity`` / ``release_capacity`` or cannot be said in QMP (a head or region that
    is not a small int, an unknown policy, a DPA below its region's base).

    ``region_bases`` are the bases of the device's regions (a region index past them gets
    base 0: the device refuses such a request before reading its extents).

    As made (``resolve=False``): the request as the device got it — policy, tag, head,
    the requested ranges, and for free/contiguous selection the length.  Sent to an
    extended :class:`QmpServer` over a device built from the same configuration (same
    seed), after the same earlier operations, it makes the same offer.

    Resolved (``resolve=True``, successful entries only): a free or contiguous add becomes
    a prescriptive add of the extents the device chose, and a tag-based release a
    prescriptive release of the extents it named — what upstream QEMU can be asked.
    Enable-shared-access has no prescriptive form (the capacity is another head's) and is
    kept as made.
    """
    op = entry.get("op")
    if op not in ("add_capacity", "release_capacity"):
        return None
    head, region = entry.get("head"), entry.get("region")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (head, region)):
        return None
    base = region_bases[region] if region < len(region_bases) else 0
    tag = None if entry.get("tag") in (None, "None") else entry["tag"]
    resolved = resolve and "error" not in entry
    chosen = entry.get("extents")
    if resolved and not (isinstance(chosen, list) and all(isinstance(r, list) and len(r) >= 2 for r in chosen)):
        resolved = False                # nothing to resolve to: keep the request as made
    try:
        if op == "add_capacity":
            policy = _qapi_policy(SelectionPolicy, entry.get("policy"))
            if policy in ("free", "contiguous"):
                if resolved:
                    return add_command(path, head, region, [row[:2] for row in chosen], region_base=base, tag=tag)
                length = entry.get("length")
                ok = isinstance(length, int) and not isinstance(length, bool) and length > 0
                return add_command(path, head, region, region_base=base, policy=policy, tag=tag,
                                   length=length if ok else None)
            return add_command(path, head, region, entry.get("request", []), region_base=base,
                               policy=policy, tag=tag)
        policy = _qapi_policy(RemovalPolicy, entry.get("policy"))
        ranges = entry.get("request", [])
        if resolved and policy == "tag-based":
            policy, ranges = "prescriptive", [row[:2] for row in chosen]
        return release_command(path, head, region, ranges, region_base=base, policy=policy, tag=tag,
                               forced=bool(entry.get("forced")), sanitize=bool(entry.get("sanitize")))
    except DcdmapError:
        return None


def commands_from_log(entries: Iterable[Union[Dict[str, Any], str]], path: str = DEFAULT_PATH, *,
                      regions: Optional[Sequence[Region]] = None, resolve: bool = False,
                      include_failed: bool = False) -> List[Dict[str, Any]]:
    """The QMP commands behind a device's log: one per ``add_capacity`` and
    ``release_capacity`` entry, in order (:func:`command_from_entry`).

    ``entries`` is :attr:`Device.log` or the lines :meth:`Device.write_log` wrote.  The
    region bases come from the log's ``device`` entry, or from ``regions`` when given.
    Host-side entries (Add-Response, Release, event reads) have no QMP form and are
    skipped; so are requests the device refused, unless ``include_failed`` (then they are
    sent again and refused again, which also keeps a seeded device's choices in step, see
    the docs).

        >>> from dcdmap.cxl import Device, Region
        >>> dev = Device([Region(base=0, length=1 << 30)], seed=5)
        >>> offer = dev.add_capacity(0, 0, policy="free", length=6 << 20)
        >>> [c["arguments"]["extents"] for c in commands_from_log(dev.log)]
        [[{'offset': 0, 'len': 6291456}]]
        >>> twin = Device([Region(base=0, length=1 << 30)], seed=5)
        >>> qmp = QmpServer({DEFAULT_PATH: twin})
        >>> [qmp.execute(c) for c in commands_from_log(dev.log)]
        [{'return': {}}]
        >>> twin.pending_offers(0)[0].extents.tolist() == offer.extents.tolist()
        True
    """
    items = [json.loads(e) if isinstance(e, str) else e for e in entries
             if not (isinstance(e, str) and not e.strip())]
    if regions is not None:
        bases = [r.base for r in regions]
    else:
        config = next((e.get("config") for e in items if e.get("op") == "device"), None)
        if config is None:
            raise ConfigurationError("the log has no device entry; pass regions=")
        bases = [r["base"] for r in config["regions"]]
    out = []
    for entry in items:
        if "error" in entry and not include_failed:
            continue
        cmd = command_from_entry(entry, path, bases, resolve=resolve)
        if cmd is not None:
            out.append(cmd)
    return out


# --------------------------------------------------------------------------------------------
# python -m dcdmap.cxl.qmp
# --------------------------------------------------------------------------------------------

_FLAGS = {"shareable": "shareable", "read-only": "read_only", "sanitize": "sanitize_on_release"}


def parse_region_spec(text: str) -> Region:
    """A :class:`Region` from ``BASE:LENGTH[:BLOCK[:FLAG,...]]``.

    Sizes are read by :func:`~dcdmap.units.parse_size` (``0``, ``4G``, ``0x100000000``,
    ``2MiB``); BLOCK defaults to 2 MiB; the flags are ``shareable``, ``read-only`` and
    ``sanitize`` (sanitize on release).  The layout rules (§2.2) are checked when the
    device is built.  Raises InvalidRangeError for text it cannot read.

        >>> parse_region_spec("4G:1G:2M:shareable")
        Region(base=4294967296, length=1073741824, block_size=2097152, decode_length=1073741824, dsmad_handle=None, sanitize_on_release=False, shareable=True, read_only=False)
    """
    fields = text.split(":")
    if not 2 <= len(fields) <= 4:
        raise InvalidRangeError(f"{text!r} is not BASE:LENGTH[:BLOCK[:FLAGS]]")
    base, length = parse_size(fields[0]), parse_size(fields[1])
    block = parse_size(fields[2]) if len(fields) > 2 and fields[2] else 2 * MiB
    flags: Dict[str, bool] = {}
    for flag in filter(None, fields[3].split(",") if len(fields) > 3 else []):
        if flag not in _FLAGS:
            raise InvalidRangeError(f"unknown region flag {flag!r} (known: {', '.join(_FLAGS)})")
        flags[_FLAGS[flag]] = True
    return Region(base=base, length=length, block_size=block, **flags)


def _region_arg(text: str) -> Region:
    try:
        return parse_region_spec(text)
    except DcdmapError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m dcdmap.cxl.qmp``: serve one device on stdin/stdout, one JSON command per
    line in, one JSON answer per line out.  Exit status 0 at end of input, 2 (with one
    line on stderr after the usage) for bad options or a device configuration that breaks
    a rule."""
    parser = argparse.ArgumentParser(
        prog="python -m dcdmap.cxl.qmp",
        description="Answer QEMU's DC QMP commands (cxl-add-dynamic-capacity, "
                    "cxl-release-dynamic-capacity, qmp_capabilities) for a dcdmap device: one "
                    "JSON command per line on stdin, one JSON answer per line on stdout.",
        epilog='example: echo \'{"execute": "qmp_capabilities"}\' | python -m dcdmap.cxl.qmp '
               "--region 0:1G:2M --region 4G:4G:2M:shareable --heads 2")
    parser.add_argument("--region", "--regions", dest="regions", action="append", type=_region_arg,
                        metavar="BASE:LENGTH[:BLOCK[:FLAGS]]",
                        help="a DC region, repeatable, in DPA order; FLAGS: shareable, read-only, "
                             "sanitize, comma-separated (default: one region 0:1G:2M)")
    parser.add_argument("--heads", type=int, default=1, help="heads (hosts) of the device, 1..64 (default 1)")
    parser.add_argument("--path", default=DEFAULT_PATH, help=f"the device's QOM path (default {DEFAULT_PATH})")
    parser.add_argument("--upstream", action="store_true",
                        help="behave as upstream QEMU: prescriptive only, tag and host-id ignored")
    parser.add_argument("--seed", type=int, default=0, help="seed of the device's choices (default 0)")
    parser.add_argument("--negotiate", action="store_true",
                        help="send a QMP greeting and require qmp_capabilities first, as QEMU does")
    args = parser.parse_args(argv)
    regions = args.regions or [Region(base=0, length=GiB, block_size=2 * MiB)]
    try:
        device = Device(regions, heads=args.heads, seed=args.seed)
        server = QmpServer({args.path: device}, upstream=args.upstream, negotiate=args.negotiate)
    except DcdmapError as e:
        parser.error(str(e))
    try:
        return server.serve(sys.stdin, sys.stdout)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
