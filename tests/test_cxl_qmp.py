"""dcdmap.cxl.qmp: QEMU's DC QMP commands over a Device (reference §5.1–5.2).

Every check QEMU makes is exercised with its exact text, named in the test's id or
docstring; after every refusal the device must be exactly as before (capacity, accepted
extents, pending offers, queued events, generation of every head).
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid

import pytest

from dcdmap.cxl import Device, Region
from dcdmap.cxl.qmp import (
    ADD_COMMAND, DEFAULT_PATH, RELEASE_COMMAND, QmpServer, add_command, command_from_entry,
    commands_from_log, main, parse_region_spec, release_command,
)
from dcdmap.errors import ConfigurationError, InputTypeError, InvalidRangeError, MailboxError, RequestError

M = 1 << 20
G = 1 << 30
BASE0 = 256 * M                      # region 0: [256 MiB, 768 MiB), 2 MiB blocks
BASE1 = 1 * G                        # region 1: [1 GiB, 2 GiB), 2 MiB blocks, shareable
TAG = uuid.UUID("5be1f1e0-0000-4000-8000-00000000000a")


def make_device(**kw) -> Device:
    kw.setdefault("heads", 2)
    kw.setdefault("seed", 11)
    return Device([Region(base=BASE0, length=512 * M), Region(base=BASE1, length=G, shareable=True)], **kw)


def snapshot(dev: Device):
    """Everything a refused command must leave alone (the log is allowed to grow)."""
    heads = []
    for h in range(dev.nheads):
        heads.append((
            dev.accepted(h).tolist(),
            [(o.id, o.region, o.policy, o.tag, o.extents.tolist()) for o in dev.pending_offers(h)],
            dev.events_view(h), dev.generation(h), dev.head_capacity(h),
        ))
    return dev.capacity(), [dev.capacity(r) for r in range(len(dev.regions))], heads, dev.sanitized_bytes


def add_args(**kw):
    args = {"path": DEFAULT_PATH, "host-id": 0, "selection-policy": "prescriptive", "region": 0,
            "extents": [{"offset": 0, "len": 2 * M}]}
    args.update(kw)
    return args


def release_args(**kw):
    args = {"path": DEFAULT_PATH, "host-id": 0, "removal-policy": "prescriptive", "region": 0,
            "extents": [{"offset": 0, "len": 2 * M}]}
    args.update(kw)
    return args


def ext(*pairs):
    return [{"offset": o, "len": n} for o, n in pairs]


def call(server, name, args, **extra):
    return server.execute({"execute": name, "arguments": args, **extra})


def refused(server, dev, request, desc, cls="GenericError"):
    """Send ``request``; it must be refused with exactly ``desc`` and change nothing."""
    before = snapshot(dev)
    answer = server.execute(request)
    assert answer.get("error") == {"class": cls, "desc": desc}, answer
    assert "return" not in answer
    assert snapshot(dev) == before
    dev.check_invariants()
    return answer


def ok(answer):
    assert answer == {"return": {}}, answer


@pytest.fixture
def dev():
    return make_device()


@pytest.fixture(params=[True, False], ids=["upstream", "extended"])
def mode(request):
    return request.param


@pytest.fixture
def qmp(dev, mode):
    return QmpServer({DEFAULT_PATH: dev}, upstream=mode)


def accept_all(dev, head=0):
    """The head accepts its oldest offer whole."""
    offer = dev.pending_offers(head)[0]
    dev.add_response(head, [(int(e["start"]), int(e["length"])) for e in offer.extents])


# ============================================================================ QMP envelope

def test_qmp_capabilities_returns_empty():
    server = QmpServer({})
    assert server.execute({"execute": "qmp_capabilities"}) == {"return": {}}
    assert server.execute({"execute": "qmp_capabilities", "arguments": {}, "id": "a"}) == {"return": {}, "id": "a"}
    assert server.execute({"execute": "qmp_capabilities"}) == {"return": {}}     # no negotiation mode


def test_qmp_capabilities_oob_not_available():
    server = QmpServer({})
    assert server.execute({"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}) == \
        {"error": {"class": "GenericError", "desc": "Capability oob not available"}}
    assert server.execute({"execute": "qmp_capabilities", "arguments": {"enable": ["x"]}})["error"]["desc"] == \
        "Parameter 'null' does not accept value 'x'"
    assert server.execute({"execute": "qmp_capabilities", "arguments": {"enable": "oob"}})["error"]["desc"] == \
        "Invalid parameter type for 'enable', expected: array"


def test_negotiation_mode_like_qemu_monitor(dev):
    server = QmpServer({DEFAULT_PATH: dev}, negotiate=True)
    assert server.greeting()["QMP"]["capabilities"] == []
    refused(server, dev, {"execute": ADD_COMMAND, "arguments": add_args(), "id": 1},
            "Expecting capabilities negotiation with 'qmp_capabilities'", "CommandNotFound")
    refused(server, dev, {"execute": "foo"}, "Expecting capabilities negotiation with 'qmp_capabilities'",
            "CommandNotFound")
    assert server.execute({"execute": "qmp_capabilities", "id": 2}) == {"return": {}, "id": 2}
    assert server.execute({"execute": "qmp_capabilities"}) == {"error": {
        "class": "CommandNotFound", "desc": "Capabilities negotiation is already complete, command ignored"}}
    ok(call(server, ADD_COMMAND, add_args()))


def test_unknown_command_is_command_not_found(dev):
    server = QmpServer({DEFAULT_PATH: dev})
    answer = refused(server, dev, {"execute": "foo", "id": 3}, "The command foo has not been found", "CommandNotFound")
    assert answer["id"] == 3


@pytest.mark.parametrize("request_, desc", [
    ([], "QMP input must be a JSON object"),
    (5, "QMP input must be a JSON object"),
    ("cxl-add-dynamic-capacity", "QMP input must be a JSON object"),
    ({}, "QMP input lacks member 'execute'"),
    ({"arguments": {}}, "QMP input lacks member 'execute'"),
    ({"execute": 5}, "QMP input member 'execute' must be a string"),
    ({"execute": ADD_COMMAND, "arguments": []}, "QMP input member 'arguments' must be an object"),
    ({"execute": ADD_COMMAND, "argument": {}}, "QMP input member 'argument' is unexpected"),
    ({"exec-oob": ADD_COMMAND}, "QMP input member 'exec-oob' is unexpected"),
], ids=["list", "number", "string", "empty", "no-execute", "execute-int", "arguments-list", "typo", "exec-oob"])
def test_envelope_errors(dev, request_, desc):
    """qmp_dispatch / qmp_dispatch_check_obj texts."""
    refused(QmpServer({DEFAULT_PATH: dev}), dev, request_, desc)


@pytest.mark.parametrize("rid", [1, "abc", {"x": [1, 2]}, None, 0])
def test_id_is_echoed_on_success_and_error(dev, rid):
    server = QmpServer({DEFAULT_PATH: dev})
    assert call(server, ADD_COMMAND, add_args(), id=rid) == {"return": {}, "id": rid}
    answer = call(server, ADD_COMMAND, add_args(), id=rid)
    assert answer["id"] == rid and answer["error"]["desc"] == "cannot add DPA again while still pending"
    assert server.execute({"id": rid})["id"] == rid                            # envelope errors too
    assert "id" not in server.execute([{"id": rid}])                            # not an object: no id


def test_arguments_default_to_empty_object(dev):
    refused(QmpServer({DEFAULT_PATH: dev}), dev, {"execute": ADD_COMMAND}, "Parameter 'path' is missing")


# ============================================================================ JSON lines

def test_handle_line_round_trips_json(dev):
    server = QmpServer({DEFAULT_PATH: dev})
    line = json.dumps({"execute": ADD_COMMAND, "arguments": add_args(), "id": 9})
    assert json.loads(server.handle_line(line + "\n")) == {"return": {}, "id": 9}
    assert server.handle_line("   \n") is None


@pytest.mark.parametrize("line, reason", [
    ("{", "Expecting property name enclosed in double quotes"),
    ('{"execute": }', "Expecting value"),
    ('{"execute": "a"} {"execute": "b"}', "Extra data"),
    ('{"execute": "a", "execute": "b"}', "duplicate key"),
    ('{"execute": "a", "id": NaN}', "invalid keyword 'NaN'"),
    ("{'execute': 'qmp_capabilities'}", "Expecting property name"),
])
def test_handle_line_json_parse_error(dev, line, reason):
    """Not one JSON value: GenericError 'JSON parse error, <reason>' and no id."""
    before = snapshot(dev)
    answer = json.loads(QmpServer({DEFAULT_PATH: dev}).handle_line(line))
    assert answer["error"]["class"] == "GenericError"
    assert answer["error"]["desc"].startswith("JSON parse error, " + reason)
    assert "id" not in answer
    assert snapshot(dev) == before


# ============================================================================ QAPI argument checks

@pytest.mark.parametrize("drop, desc", [
    ("path", "Parameter 'path' is missing"),
    ("host-id", "Parameter 'host-id' is missing"),
    ("selection-policy", "Parameter 'selection-policy' is missing"),
    ("region", "Parameter 'region' is missing"),
    ("extents", "Parameter 'extents' is missing"),
])
def test_add_missing_member(qmp, dev, drop, desc):
    args = add_args()
    del args[drop]
    refused(qmp, dev, {"execute": ADD_COMMAND, "arguments": args}, desc)


@pytest.mark.parametrize("drop, desc", [
    ("path", "Parameter 'path' is missing"),
    ("host-id", "Parameter 'host-id' is missing"),
    ("removal-policy", "Parameter 'removal-policy' is missing"),
    ("region", "Parameter 'region' is missing"),
    ("extents", "Parameter 'extents' is missing"),
])
def test_release_missing_member(qmp, dev, drop, desc):
    args = release_args()
    del args[drop]
    refused(qmp, dev, {"execute": RELEASE_COMMAND, "arguments": args}, desc)


@pytest.mark.parametrize("member, value, desc", [
    ("path", 5, "Invalid parameter type for 'path', expected: string"),
    ("path", None, "Invalid parameter type for 'path', expected: string"),
    ("host-id", "0", "Parameter 'host-id' expects uint64"),
    ("host-id", 1.0, "Parameter 'host-id' expects uint64"),
    ("host-id", True, "Parameter 'host-id' expects uint64"),
    ("host-id", 65536, "Parameter 'host-id' expects uint16_t"),
    ("host-id", -1, "Parameter 'host-id' expects uint16_t"),            # wraps to 2**64-1, like QEMU
    ("selection-policy", "bogus", "Parameter 'selection-policy' does not accept value 'bogus'"),
    ("selection-policy", "PRESCRIPTIVE", "Parameter 'selection-policy' does not accept value 'PRESCRIPTIVE'"),
    ("selection-policy", 2, "Invalid parameter type for 'selection-policy', expected: string"),
    ("region", 256, "Parameter 'region' expects uint8_t"),
    ("region", -1, "Parameter 'region' expects uint8_t"),
    ("region", "0", "Parameter 'region' expects uint64"),
    ("region", [0], "Parameter 'region' expects uint64"),
    ("region", 1 << 64, "Parameter 'region' expects uint64"),
    ("tag", 5, "Invalid parameter type for 'tag', expected: string"),
    ("tag", None, "Invalid parameter type for 'tag', expected: string"),    # null is present, not absent
    ("extents", {}, "Invalid parameter type for 'extents', expected: array"),
    ("extents", [5], "Invalid parameter type for 'extents[0]', expected: object"),
    ("extents", [{"offset": 0}], "Parameter 'extents[0].len' is missing"),
    ("extents", [{"len": 2 * M}], "Parameter 'extents[0].offset' is missing"),
    ("extents", ext((0, 2 * M)) + [{"offset": "0", "len": 2 * M}], "Parameter 'extents[1].offset' expects uint64"),
    ("extents", [{"offset": 0, "len": 2.0 * M}], "Parameter 'extents[0].len' expects uint64"),
    ("extents", [{"offset": 1 << 64, "len": 2 * M}], "Parameter 'extents[0].offset' expects uint64"),
    ("extents", [{"offset": -(1 << 63) - 1, "len": 2 * M}], "Parameter 'extents[0].offset' expects uint64"),
    ("extents", [{"offset": 0, "len": 2 * M, "tag": "x"}], "Parameter 'extents[0].tag' is unexpected"),
    ("foo", 1, "Parameter 'foo' is unexpected"),
])
def test_add_argument_types(qmp, dev, member, value, desc):
    """QAPI input-visitor texts (qobject-input-visitor.c, qapi-visit-core.c)."""
    refused(qmp, dev, {"execute": ADD_COMMAND, "arguments": add_args(**{member: value})}, desc)


@pytest.mark.parametrize("member, value, desc", [
    ("removal-policy", "free", "Parameter 'removal-policy' does not accept value 'free'"),
    ("forced-removal", "yes", "Invalid parameter type for 'forced-removal', expected: boolean"),
    ("forced-removal", 1, "Invalid parameter type for 'forced-removal', expected: boolean"),
    ("sanitize-on-release", None, "Invalid parameter type for 'sanitize-on-release', expected: boolean"),
    ("selection-policy", "prescriptive", "Parameter 'selection-policy' is unexpected"),
])
def test_release_argument_types(qmp, dev, member, value, desc):
    refused(qmp, dev, {"execute": RELEASE_COMMAND, "arguments": release_args(**{member: value})}, desc)


def test_members_are_checked_in_schema_order(qmp, dev):
    """The first bad member in schema order is named; unknown members only after all are good."""
    args = add_args(region="x", **{"host-id": "y"})
    refused(qmp, dev, {"execute": ADD_COMMAND, "arguments": args}, "Parameter 'host-id' expects uint64")
    args = {"foo": 1, "extents": [], "region": 0}
    refused(qmp, dev, {"execute": ADD_COMMAND, "arguments": args}, "Parameter 'path' is missing")
    args = add_args(extents=[{"offset": 0, "len": 2 * M, "x": 1}], foo=1)
    refused(qmp, dev, {"execute": ADD_COMMAND, "arguments": args}, "Parameter 'extents[0].x' is unexpected")


def test_qapi_checks_precede_policy_gates_and_path(dev):
    server = QmpServer({DEFAULT_PATH: dev}, upstream=True)
    args = add_args(path="/nowhere", region=999, **{"selection-policy": "free"})
    refused(server, dev, {"execute": ADD_COMMAND, "arguments": args}, "Parameter 'region' expects uint8_t")


def test_negative_u64_wraps_like_qemu(qmp, dev):
    """QEMU accepts a negative int64 for a uint64 and wraps it: offset -2 MiB is 2**64 - 2 MiB,
    far past the region end (and DPA = base + offset wraps in u64 as in QEMU)."""
    refused(qmp, dev, {"execute": ADD_COMMAND, "arguments": add_args(extents=ext((-2 * M, 2 * M)))},
            "extent range is beyond the region end")
    refused(qmp, dev, {"execute": ADD_COMMAND, "arguments": add_args(extents=ext((0, -2 * M)))},
            "extent range is beyond the region end")


# ============================================================================ upstream policy gates

@pytest.mark.parametrize("policy", ["free", "contiguous", "enable-shared-access"])
def test_upstream_selection_policy_not_supported(dev, policy):
    """§5.1: upstream refuses every selection policy but prescriptive, before it resolves the path."""
    server = QmpServer({DEFAULT_PATH: dev}, upstream=True)
    for path in (DEFAULT_PATH, "/nowhere"):
        args = add_args(path=path, **{"selection-policy": policy})
        refused(server, dev, {"execute": ADD_COMMAND, "arguments": args}, "Selection policy not supported")


def test_upstream_forced_removal_not_supported_yet(dev):
    """§5.1: forced-removal true is refused first: before the removal policy and the path."""
    server = QmpServer({DEFAULT_PATH: dev}, upstream=True)
    for policy in ("prescriptive", "tag-based"):
        args = release_args(path="/nowhere", **{"removal-policy": policy, "forced-removal": True})
        refused(server, dev, {"execute": RELEASE_COMMAND, "arguments": args}, "Forced removal not supported yet")


def test_upstream_removal_policy_not_supported(dev):
    """§5.1: tag-based removal is refused, before the path is resolved."""
    server = QmpServer({DEFAULT_PATH: dev}, upstream=True)
    for path in (DEFAULT_PATH, "/nowhere"):
        args = release_args(path=path, **{"removal-policy": "tag-based", "forced-removal": False})
        refused(server, dev, {"execute": RELEASE_COMMAND, "arguments": args}, "Removal policy not supported")


def test_upstream_forced_removal_false_is_fine(dev):
    server = QmpServer({DEFAULT_PATH: dev}, upstream=True)
    ok(call(server, ADD_COMMAND, add_args()))
    accept_all(dev)
    ok(call(server, RELEASE_COMMAND, release_args(**{"forced-removal": False})))
    assert dev.events_view(0)[-1]["type"] == "RELEASE_CAPACITY"


# ============================================================================ path resolution

@pytest.mark.parametrize("path", ["/machine/peripheral/cxl-dcd1", "/machine/peripheral", "/", "", "cxl",
                                  "machine", "/cxl-dcd0"])
def test_unable_to_resolve_device(qmp, dev, path):
    """§5.2 path not a type-3 device."""
    refused(qmp, dev, {"execute": ADD_COMMAND, "arguments": add_args(path=path)},
            "Unable to resolve CXL type 3 device")
    refused(qmp, dev, {"execute": RELEASE_COMMAND, "arguments": release_args(path=path)},
            "Unable to resolve CXL type 3 device")


@pytest.mark.parametrize("path", ["cxl-dcd0", "peripheral/cxl-dcd0", "//machine//peripheral/cxl-dcd0/"])
def test_partial_and_untidy_paths_resolve(qmp, dev, path):
    ok(call(qmp, ADD_COMMAND, add_args(path=path)))
    assert len(dev.pending_offers(0)) == 1


def test_ambiguous_partial_path_does_not_resolve():
    a, b = make_device(), make_device()
    server = QmpServer({"/machine/peripheral/cxl-dcd0": a, "/machine/other/cxl-dcd0": b})
    refused(server, a, {"execute": ADD_COMMAND, "arguments": add_args(path="cxl-dcd0")},
            "Unable to resolve CXL type 3 device")
    ok(call(server, ADD_COMMAND, add_args(path="other/cxl-dcd0")))
    assert len(b.pending_offers(0)) == 1 and not a.pending_offers(0)


def test_server_configuration_errors():
    with pytest.raises(ConfigurationError):
        QmpServer({"cxl-dcd0": make_device()})
    with pytest.raises(ConfigurationError):
        QmpServer({"/a": object()})
    with pytest.raises(ConfigurationError):
        QmpServer({"/a/b": make_device(), "//a/b/": make_device()})
    server = QmpServer({"/a/b": make_device()})
    assert list(server.devices) == ["/a/b"]


# ============================================================================ §5.2 region and extent rules

def test_no_dynamic_capacity_support(mode):
    """§5.2 no DC regions."""
    dev = Device([])
    server = QmpServer({DEFAULT_PATH: dev}, upstream=mode)
    refused(server, dev, {"execute": ADD_COMMAND, "arguments": add_args()},
            "No dynamic capacity support from the device")
    refused(server, dev, {"execute": RELEASE_COMMAND, "arguments": release_args()},
            "No dynamic capacity support from the device")


@pytest.mark.parametrize("region", [2, 7, 255])
def test_region_id_is_too_large(qmp, dev, region):
    """§5.2 region >= number of regions (the region passes through unchanged)."""
    refused(qmp, dev, {"execute": ADD_COMMAND, "arguments": add_args(region=region)}, "region id is too large")
    refused(qmp, dev, {"execute": RELEASE_COMMAND, "arguments": release_args(region=region)},
            "region id is too large")


EXTENT_RULES = [
    ("len == 0", ext((0, 0)), "extent with 0 length is not allowed"),
    ("len == 0 after a good extent", ext((0, 2 * M), (4 * M, 0)), "extent with 0 length is not allowed"),
    ("offset not block-aligned", ext((4096, 2 * M)), "dpa or len is not aligned to region block size"),
    ("len not block-aligned", ext((0, 3 * M)), "dpa or len is not aligned to region block size"),
    ("offset+len > region length", ext((510 * M, 4 * M)), "extent range is beyond the region end"),
    ("offset >= region length", ext((512 * M, 2 * M)), "extent range is beyond the region end"),
    ("len == 0 past the region end", ext((G, 0)), "extent with 0 length is not allowed"),
    ("offset not aligned past the region end", ext((512 * M + 4096, 2 * M)),
     "dpa or len is not aligned to region block size"),
    ("duplicate extents", ext((0, 2 * M), (0, 2 * M)), "duplicate or overlapped extents are detected"),
    ("overlapping extents", ext((0, 4 * M), (8 * M, 2 * M), (2 * M, 2 * M)),
     "duplicate or overlapped extents are detected"),
]


@pytest.mark.parametrize("rule, extents, desc", EXTENT_RULES, ids=[r[0] for r in EXTENT_RULES])
@pytest.mark.parametrize("command", [ADD_COMMAND, RELEASE_COMMAND])
def test_extent_rules(qmp, dev, rule, extents, desc, command):
    """§5.2 per-extent checks, with QEMU's text, for add and release, in both modes.  For a
    release, offsets [0, 16 MiB) are accepted first, so the good extents pass QEMU's
    backed check (QEMU checks extent by extent: state checks of extent 0 come before the
    shape checks of extent 1)."""
    if command == RELEASE_COMMAND:
        dev.add_capacity(0, 0, [(BASE0, 16 * M)])
        accept_all(dev)
    args = (add_args if command == ADD_COMMAND else release_args)(extents=extents)
    refused(qmp, dev, {"execute": command, "arguments": args}, desc)


def test_checks_run_extent_by_extent_like_qemu(qmp, dev):
    """QEMU runs every check of extent 0 (shape, then accepted/pending/backed) before any of
    extent 1, so an early extent's state error wins over a later extent's shape error."""
    ok(call(qmp, ADD_COMMAND, add_args(extents=ext((0, 2 * M)))))
    accept_all(dev)
    ok(call(qmp, ADD_COMMAND, add_args(extents=ext((4 * M, 2 * M)))))      # pending
    for extents, desc in [
        (ext((4 * M, 2 * M), (8 * M, 0)), "cannot add DPA again while still pending"),
        (ext((4 * M, 2 * M), (0, 2 * M)), "cannot add DPA again while still pending"),
        (ext((0, 2 * M), (4 * M, 2 * M)), "cannot add DPA already accessible to the same LD"),
        (ext((8 * M, 2 * M), (0, 2 * M), (4 * M, 2 * M)), "cannot add DPA already accessible to the same LD"),
    ]:
        refused(qmp, dev, {"execute": ADD_COMMAND, "arguments": add_args(extents=extents)}, desc)
    for extents, desc in [
        (ext((8 * M, 2 * M), (0, 0)), "cannot release extent with non-existing DPA range"),
        (ext((8 * M, 2 * M), (4 * M, 2 * M)), "cannot release extent with non-existing DPA range"),
        (ext((4 * M, 2 * M), (8 * M, 2 * M)), "cannot release extent with pending DPA range"),
        (ext((0, 2 * M), (4 * M, 2 * M)), "cannot release extent with pending DPA range"),
        (ext((0, 2 * M), (3 * M, 2 * M)), "dpa or len is not aligned to region block size"),
    ]:
        refused(qmp, dev, {"execute": RELEASE_COMMAND, "arguments": release_args(extents=extents)}, desc)


def test_add_already_accessible(qmp, dev):
    """§5.2 add: overlaps accepted extents."""
    ok(call(qmp, ADD_COMMAND, add_args(extents=ext((0, 4 * M)))))
    accept_all(dev)
    refused(qmp, dev, {"execute": ADD_COMMAND, "arguments": add_args(extents=ext((2 * M, 4 * M)))},
            "cannot add DPA already accessible to the same LD")


def test_add_again_while_pending(qmp, dev):
    """§5.2 add: overlaps a pending group."""
    ok(call(qmp, ADD_COMMAND, add_args(extents=ext((0, 4 * M)))))
    refused(qmp, dev, {"execute": ADD_COMMAND, "arguments": add_args(extents=ext((8 * M, 2 * M), (2 * M, 2 * M)))},
            "cannot add DPA again while still pending")


def test_release_pending_range(qmp, dev):
    """§5.2 release: overlaps a pending group."""
    ok(call(qmp, ADD_COMMAND, add_args(extents=ext((0, 4 * M)))))
    refused(qmp, dev, {"execute": RELEASE_COMMAND, "arguments": release_args(extents=ext((2 * M, 2 * M)))},
            "cannot release extent with pending DPA range")


def test_release_non_existing_range(qmp, dev):
    """§5.2 release: range not fully backed by accepted extents."""
    refused(qmp, dev, {"execute": RELEASE_COMMAND, "arguments": release_args()},
            "cannot release extent with non-existing DPA range")
    ok(call(qmp, ADD_COMMAND, add_args(extents=ext((0, 4 * M)))))
    accept_all(dev)
    refused(qmp, dev, {"execute": RELEASE_COMMAND, "arguments": release_args(extents=ext((2 * M, 4 * M)))},
            "cannot release extent with non-existing DPA range")
    ok(call(qmp, RELEASE_COMMAND, release_args(extents=ext((2 * M, 2 * M)))))      # part of an extent


def test_offsets_are_relative_to_the_region_base(qmp, dev):
    """DPA = region base + offset, in both regions."""
    ok(call(qmp, ADD_COMMAND, add_args(extents=ext((6 * M, 2 * M), (0, 4 * M)))))
    ok(call(qmp, ADD_COMMAND, add_args(region=1, extents=ext((G - 2 * M, 2 * M)))))
    offers = dev.pending_offers(0)
    assert offers[0].extents[["start", "length"]].tolist() == [(BASE0 + 6 * M, 2 * M), (BASE0, 4 * M)]
    assert offers[1].region == 1 and offers[1].extents["start"].tolist() == [BASE1 + G - 2 * M]
    assert [e["start"] for e in dev.events_view(0)] == [BASE0 + 6 * M, BASE0, BASE1 + G - 2 * M]
    accept_all(dev)
    ok(call(qmp, RELEASE_COMMAND, release_args(extents=ext((0, 2 * M)))))
    assert dev.events_view(0)[-1]["start"] == BASE0


def test_empty_extent_list_succeeds_silently(qmp, dev):
    """QEMU queues no group and no event for an empty list, and answers success."""
    before = snapshot(dev)
    ok(call(qmp, ADD_COMMAND, add_args(extents=[])))
    ok(call(qmp, RELEASE_COMMAND, release_args(extents=[])))
    assert snapshot(dev) == before


def test_success_is_one_pending_group_and_chained_events(qmp, dev):
    """§5.2: one pending group per add, one event per extent, More on all but the last."""
    ok(call(qmp, ADD_COMMAND, add_args(extents=ext((0, 2 * M), (4 * M, 2 * M), (8 * M, 2 * M)))))
    assert len(dev.pending_offers(0)) == 1
    assert [e["more"] for e in dev.events_view(0)] == [True, True, False]


# ============================================================================ upstream ignores tag and host id

def test_upstream_ignores_tag_and_host_id(dev):
    server = QmpServer({DEFAULT_PATH: dev}, upstream=True)
    ok(call(server, ADD_COMMAND, add_args(tag="not a uuid at all", **{"host-id": 5})))
    ok(call(server, ADD_COMMAND, add_args(region=1, tag=str(TAG), **{"host-id": 1})))
    assert not dev.pending_offers(1)
    offers = dev.pending_offers(0)
    assert len(offers) == 2 and all(o.tag == uuid.UUID(int=0) for o in offers)
    assert {e["tag"] for e in dev.events_view(0)} == {str(uuid.UUID(int=0))}


def test_upstream_ignores_sanitize_on_release(dev):
    server = QmpServer({DEFAULT_PATH: dev}, upstream=True)
    ok(call(server, ADD_COMMAND, add_args()))
    accept_all(dev)
    ok(call(server, RELEASE_COMMAND, release_args(**{"sanitize-on-release": True, "host-id": 1})))
    dev.release(0, [(BASE0, 2 * M)])
    assert dev.sanitized_bytes == 0


# ============================================================================ extended mode

@pytest.fixture
def ext_qmp(dev):
    return QmpServer({DEFAULT_PATH: dev})


def test_extended_host_id_selects_the_head(ext_qmp, dev):
    ok(call(ext_qmp, ADD_COMMAND, add_args(**{"host-id": 1})))
    assert not dev.pending_offers(0) and len(dev.pending_offers(1)) == 1
    refused(ext_qmp, dev, {"execute": ADD_COMMAND, "arguments": add_args(**{"host-id": 2})},
            "host id 2 is not a head of this device (0..1)")


def test_extended_tag_is_a_uuid(ext_qmp, dev):
    ok(call(ext_qmp, ADD_COMMAND, add_args(tag=str(TAG))))
    assert dev.pending_offers(0)[0].tag == TAG
    assert dev.events_view(0)[0]["tag"] == str(TAG)
    refused(ext_qmp, dev, {"execute": ADD_COMMAND, "arguments": add_args(tag="nope", extents=ext((8 * M, 2 * M)))},
            "tag 'nope' is not a UUID")


@pytest.mark.parametrize("policy, pieces", [("free", None), ("contiguous", 1)])
def test_extended_free_and_contiguous_take_the_sum_of_lens(ext_qmp, dev, policy, pieces):
    """QAPI has no length member: the length is the sum of the lens; offsets are not used."""
    ok(call(ext_qmp, ADD_COMMAND, add_args(**{"selection-policy": policy},
                                           extents=ext((12345, 4 * M), (0, 2 * M)))))
    offer = dev.pending_offers(0)[0]
    assert offer.length == 6 * M and offer.policy.name == policy.upper()
    if pieces:
        assert len(offer.extents) == pieces


def test_extended_free_with_no_extents_needs_a_length(ext_qmp, dev):
    refused(ext_qmp, dev, {"execute": ADD_COMMAND, "arguments": add_args(**{"selection-policy": "free"}, extents=[])},
            "free selection needs a positive length")


@pytest.mark.parametrize("policy", ["free", "contiguous"])
def test_extended_free_length_is_a_u64(ext_qmp, dev, policy):
    """The summed length must fit the u64 length of FM API Initiate DC Add (this layer's rule,
    since the sum is this layer's reading of QAPI)."""
    refused(ext_qmp, dev, {"execute": ADD_COMMAND, "arguments": add_args(
        **{"selection-policy": policy}, extents=ext((0, 1 << 63), (0, 1 << 63)))},
        f"{policy} selection: the extents' lengths add up to more than 2**64 - 1")


def test_extended_free_length_must_be_block_aligned(ext_qmp, dev):
    refused(ext_qmp, dev, {"execute": ADD_COMMAND,
                           "arguments": add_args(**{"selection-policy": "contiguous"}, extents=ext((0, M)))},
            "dpa or len is not aligned to region block size")


def test_extended_enable_shared_access_and_tag_based_release(ext_qmp, dev):
    ok(call(ext_qmp, ADD_COMMAND, add_args(region=1, tag=str(TAG), extents=ext((0, 4 * M), (8 * M, 2 * M)))))
    accept_all(dev, 0)
    ok(call(ext_qmp, ADD_COMMAND, add_args(region=1, tag=str(TAG), extents=[],
                                           **{"host-id": 1, "selection-policy": "enable-shared-access"})))
    shared = dev.pending_offers(1)[0]
    assert shared.length == 6 * M and shared.tag == TAG
    accept_all(dev, 1)
    ok(call(ext_qmp, RELEASE_COMMAND, release_args(region=1, tag=str(TAG), extents=[],
                                                   **{"host-id": 1, "removal-policy": "tag-based"})))
    released = [e for e in dev.events_view(1) if e["type"] == "RELEASE_CAPACITY"]
    assert sum(e["length"] for e in released) == 6 * M
    refused(ext_qmp, dev, {"execute": RELEASE_COMMAND, "arguments": release_args(
        region=1, extents=[], **{"removal-policy": "tag-based"})}, "tag-based removal needs a tag")


def test_extended_forced_removal_takes_capacity_back(ext_qmp, dev):
    ok(call(ext_qmp, ADD_COMMAND, add_args(extents=ext((0, 4 * M)))))
    accept_all(dev)
    ok(call(ext_qmp, RELEASE_COMMAND, release_args(extents=ext((0, 2 * M)), **{"forced-removal": True})))
    assert dev.accepted(0)[["start", "length"]].tolist() == [(BASE0 + 2 * M, 2 * M)]
    assert dev.events_view(0)[-1]["type"] == "FORCED_CAPACITY_RELEASE"


def test_extended_sanitize_on_release_reaches_the_device(ext_qmp, dev):
    ok(call(ext_qmp, ADD_COMMAND, add_args()))
    accept_all(dev)
    ok(call(ext_qmp, RELEASE_COMMAND, release_args(**{"sanitize-on-release": True})))
    dev.release(0, [(BASE0, 2 * M)])
    assert dev.sanitized_bytes == 2 * M


def test_device_errors_are_generic_errors_with_the_device_text(ext_qmp, dev):
    """The QMP layer adds no text of its own for device rules: it relays RequestError."""
    with pytest.raises(RequestError) as e:
        dev.add_capacity(0, 0, [(BASE0, 0)])
    refused(ext_qmp, dev, {"execute": ADD_COMMAND, "arguments": add_args(extents=ext((0, 0)))}, str(e.value))


# ============================================================================ reverse generation

def test_add_command_shape():
    cmd = add_command("/p", 1, 1, [(BASE1 + 4 * M, 2 * M)], region_base=BASE1, tag=TAG, id="x")
    assert cmd == {"execute": ADD_COMMAND, "id": "x", "arguments": {
        "path": "/p", "host-id": 1, "selection-policy": "prescriptive", "region": 1, "tag": str(TAG),
        "extents": [{"offset": 4 * M, "len": 2 * M}]}}
    assert "tag" not in add_command("/p", 0, 0, region_base=0, tag=uuid.UUID(int=0))["arguments"]
    for spelling in ("enable-shared-access", "ENABLE_SHARED_ACCESS", 3):
        assert add_command("/p", 0, 0, region_base=0, policy=spelling)["arguments"]["selection-policy"] == \
            "enable-shared-access"


def test_add_command_accepts_an_extent_array(dev):
    offer = dev.add_capacity(0, 0, [(BASE0 + 2 * M, 2 * M), (BASE0, 2 * M)])
    cmd = add_command("/p", 0, 0, offer.extents, region_base=BASE0)
    assert cmd["arguments"]["extents"] == ext((2 * M, 2 * M), (0, 2 * M))


def test_release_command_shape():
    cmd = release_command("/p", 0, 0, [(BASE0, 2 * M)], region_base=BASE0, sanitize=True, policy="TAG_BASED")
    assert cmd == {"execute": RELEASE_COMMAND, "arguments": {
        "path": "/p", "host-id": 0, "removal-policy": "tag-based", "sanitize-on-release": True, "region": 0,
        "extents": [{"offset": 0, "len": 2 * M}]}}


@pytest.mark.parametrize("kw, error", [
    (dict(extents=[(0, 2 * M)], region_base=BASE0), InvalidRangeError),       # DPA below the base
    (dict(extents=[(BASE0, -1)], region_base=BASE0), InvalidRangeError),
    (dict(extents=[(BASE0, 1 << 64)], region_base=BASE0), InvalidRangeError),
    (dict(extents=[(BASE0,)], region_base=BASE0), InputTypeError),
    (dict(region_base=0, head=1 << 16), InvalidRangeError),
    (dict(region_base=0, region=256), InvalidRangeError),
    (dict(region_base=0, head=True), InvalidRangeError),
    (dict(region_base=0, policy="sideways"), InputTypeError),
    (dict(region_base=0, policy=9), InputTypeError),
    (dict(region_base=0, tag=12), InputTypeError),
    (dict(region_base=0, length=2 * M), InputTypeError),                       # length with prescriptive
    (dict(region_base=0, policy="free", length=2 * M, extents=[(0, 2 * M)]), InputTypeError),
])
def test_add_command_errors(kw, error):
    kw = {"head": 0, "region": 0, **kw}
    with pytest.raises(error):
        add_command("/p", kw.pop("head"), kw.pop("region"), kw.pop("extents", ()), **kw)


def _fm(entries):
    """The FM-side entries of a log, without the request (a free add is replayed from its
    length) and with the policy in one spelling (the log keeps the caller's)."""
    return [{**{k: v for k, v in e.items() if k != "request"},
             "policy": str(e["policy"]).replace("-", "_").upper()}
            for e in entries if e["op"] in ("add_capacity", "release_capacity")]


def test_commands_from_log_round_trip_fm_only():
    """A log of FM requests only: its commands, sent to a fresh device, make the same offers."""
    src = make_device()
    src.add_capacity(0, 0, [(BASE0 + 8 * M, 4 * M), (BASE0, 2 * M)])
    src.add_capacity(1, 1, policy="free", length=10 * M, tag=TAG)
    src.add_capacity(0, 1, policy="contiguous", length=6 * M)
    src.add_capacity(1, 0, [(BASE0 + 64 * M, 2 * M)], tag=str(TAG))
    with pytest.raises(RequestError):
        src.add_capacity(0, 0, [(BASE0, 2 * M)])                      # pending: left out
    src.add_capacity(0, 0, [])                                        # empty: kept
    cmds = commands_from_log(src.log)
    assert len(cmds) == 5
    dst = make_device()
    server = QmpServer({DEFAULT_PATH: dst})
    assert [server.execute(c) for c in cmds] == [{"return": {}}] * 5
    assert snapshot(dst) == snapshot(src)
    assert _fm(dst.log) == [e for e in _fm(src.log) if "error" not in e]


def _replay_host_op(dev, entry):
    try:
        if entry["op"] == "add_response":
            dev.add_response(entry["head"], entry["extents"])
        elif entry["op"] == "release":
            dev.release(entry["head"], entry["extents"])
        elif entry["op"] == "take_events":
            dev.take_events(entry["head"], entry["count"])
    except MailboxError:
        pass


def _busy_session():
    """Two heads, every policy, host answers in between, and refused requests."""
    src = make_device()
    src.add_capacity(0, 1, [(BASE1, 8 * M), (BASE1 + 16 * M, 4 * M)], tag=TAG)
    src.take_events(0)
    accept_all(src, 0)
    src.add_capacity(1, 1, policy="enable-shared-access", tag=TAG)
    with pytest.raises(RequestError):
        src.add_capacity(1, 1, policy="enable-shared-access", tag=TAG)      # already pending on head 1
    src.add_capacity(1, 0, policy="free", length=20 * M)
    accept_all(src, 1)
    src.add_capacity(0, 0, policy="contiguous", length=4 * M)
    with pytest.raises(RequestError):
        src.release_capacity(0, 0, [(BASE0, 2 * M), (BASE0 + 2 * M, 0)])
    src.add_response(0, [])                                                 # head 0 rejects the contiguous offer
    accept_all(src, 1)
    src.release_capacity(1, 1, policy="tag-based", tag=TAG)
    src.release_capacity(0, 1, [(BASE1 + 2 * M, 2 * M)], forced=True, sanitize=True)
    src.add_capacity(0, 0, [(BASE0 + 100 * M, 6 * M)])
    src.release(1, [(int(e["start"]), int(e["length"])) for e in src.accepted(1)
                    if e["start"] >= BASE1][:1])
    src.check_invariants()
    return src


def test_commands_from_log_round_trip_with_host_answers_and_failures():
    """Entry by entry: FM entries through QMP (failed ones included), host entries directly;
    the replayed device makes the same offers, the same refusals and ends in the same state."""
    src = _busy_session()
    dst = make_device()
    server = QmpServer({DEFAULT_PATH: dst})
    bases = [r.base for r in dst.regions]
    sent = 0
    for entry in src.log[1:]:
        cmd = command_from_entry(entry, DEFAULT_PATH, bases)
        if cmd is None:
            _replay_host_op(dst, entry)
            continue
        sent += 1
        answer = server.execute(cmd)
        assert answer == ({"error": {"class": "GenericError", "desc": entry["error"]}}
                          if "error" in entry else {"return": {}})
    assert sent == 9
    assert _fm(dst.log) == _fm(src.log)
    assert snapshot(dst) == snapshot(src)
    assert [e for e in dst.log if e["op"] == "add_response"] == [e for e in src.log if e["op"] == "add_response"]


def test_commands_from_log_include_failed():
    src = _busy_session()
    cmds = commands_from_log(src.log, include_failed=True)
    assert len(cmds) == len(commands_from_log(src.log)) + 2
    assert commands_from_log([json.dumps(e) for e in src.log]) == commands_from_log(src.log)


def test_commands_from_log_resolved_drive_upstream_qemu():
    """resolve=True: free and contiguous adds become the prescriptive adds of the extents the
    device chose; an upstream server makes the same offers from them."""
    src = Device([Region(base=BASE0, length=512 * M)], seed=4)
    src.add_capacity(0, 0, policy="free", length=14 * M)
    accept_all(src)
    src.add_capacity(0, 0, policy="contiguous", length=8 * M)
    src.add_capacity(0, 0, [(BASE0 + 256 * M, 2 * M)])
    src.release_capacity(0, 0, [(int(src.accepted(0)[0]["start"]), 2 * M)])
    cmds = commands_from_log(src.log, resolve=True)
    assert {c["arguments"].get("selection-policy", "prescriptive") for c in cmds} == {"prescriptive"}
    dst = Device([Region(base=BASE0, length=512 * M)], seed=999)      # no choices left to the seed
    server = QmpServer({DEFAULT_PATH: dst}, upstream=True)
    for cmd in cmds:
        ok(server.execute(cmd))
        if not dst.accepted(0).size and cmd["execute"] == ADD_COMMAND:
            accept_all(dst)
    assert [o.policy.name for o in src.pending_offers(0)] == ["CONTIGUOUS", "PRESCRIPTIVE"]
    assert [o.policy.name for o in dst.pending_offers(0)] == ["PRESCRIPTIVE", "PRESCRIPTIVE"]
    assert [o.extents.tolist() for o in dst.pending_offers(0)] == [o.extents.tolist() for o in src.pending_offers(0)]
    assert dst.accepted(0).tolist() == src.accepted(0).tolist()
    assert dst.events_view(0) == src.events_view(0)
    assert dst.capacity() == src.capacity()


def test_commands_from_log_resolves_tag_based_release():
    src = _busy_session()
    tag_based = [e for e in src.log if e["op"] == "release_capacity" and e["policy"] == "tag-based"]
    cmd = command_from_entry(tag_based[0], DEFAULT_PATH, [BASE0, BASE1], resolve=True)
    assert cmd["arguments"]["removal-policy"] == "prescriptive"
    assert sum(x["len"] for x in cmd["arguments"]["extents"]) == sum(r[1] for r in tag_based[0]["extents"])


def test_commands_from_log_needs_the_regions():
    src = make_device()
    src.add_capacity(0, 1, [(BASE1, 2 * M)])
    with pytest.raises(ConfigurationError):
        commands_from_log(src.log[1:])
    cmds = commands_from_log(src.log[1:], regions=src.regions)
    assert cmds[0]["arguments"]["extents"] == ext((0, 2 * M))


def test_command_from_entry_skips_what_qmp_cannot_say():
    bases = [BASE0]
    assert command_from_entry({"op": "add_response", "head": 0}, "/p", bases) is None
    for bad in ({"head": -1}, {"head": "0"}, {"policy": "sideways"}, {"request": [[0, 2 * M]]}):
        entry = {"op": "add_capacity", "head": 0, "region": 0, "policy": "PRESCRIPTIVE", "tag": "None",
                 "request": [[BASE0, 2 * M]], "length": None, "error": "x", **bad}
        assert command_from_entry(entry, "/p", bases) is None


# ============================================================================ entry point

def _run(args, lines, check=True):
    proc = subprocess.run([sys.executable, "-m", "dcdmap.cxl.qmp", *args], input="".join(l + "\n" for l in lines),
                          capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_entry_point_session():
    lines = [
        json.dumps({"execute": "qmp_capabilities"}),
        json.dumps({"execute": ADD_COMMAND, "arguments": add_args(**{"host-id": 1}, region=1), "id": 1}),
        "",
        json.dumps({"execute": ADD_COMMAND, "arguments": add_args(**{"host-id": 1}, region=1), "id": 2}),
        "not json",
        json.dumps({"execute": RELEASE_COMMAND, "arguments": release_args(**{"forced-removal": True})}),
        json.dumps({"execute": "query-status"}),
    ]
    proc = _run(["--region", "256M:512M:2M", "--region", "1G:1G:2M:shareable", "--heads", "2", "--seed", "3"],
                lines)
    answers = [json.loads(l) for l in proc.stdout.splitlines()]
    assert answers == [
        {"return": {}},
        {"return": {}, "id": 1},
        {"error": {"class": "GenericError", "desc": "cannot add DPA again while still pending"}, "id": 2},
        {"error": {"class": "GenericError", "desc": answers[3]["error"]["desc"]}},
        {"error": {"class": "GenericError", "desc": "cannot release extent with non-existing DPA range"}},
        {"error": {"class": "CommandNotFound", "desc": "The command query-status has not been found"}},
    ]
    assert answers[3]["error"]["desc"].startswith("JSON parse error, ")
    assert proc.stderr == ""


def test_entry_point_defaults_and_upstream():
    lines = [json.dumps({"execute": ADD_COMMAND, "arguments": add_args(extents=ext((G - 2 * M, 2 * M)))}),
             json.dumps({"execute": ADD_COMMAND, "arguments": add_args(extents=ext((G, 2 * M)))}),
             json.dumps({"execute": ADD_COMMAND, "arguments": add_args(**{"selection-policy": "free"})}),
             json.dumps({"execute": ADD_COMMAND, "arguments": add_args(path="/machine/peripheral/x")})]
    answers = [json.loads(l) for l in _run(["--upstream"], lines).stdout.splitlines()]
    assert [a.get("error", {}).get("desc") for a in answers] == [
        None, "extent range is beyond the region end", "Selection policy not supported",
        "Unable to resolve CXL type 3 device"]
    answers = [json.loads(l) for l in _run(["--path", "/machine/peripheral/x"], lines[3:]).stdout.splitlines()]
    assert answers == [{"return": {}}]


def test_entry_point_negotiate():
    lines = [json.dumps({"execute": ADD_COMMAND, "arguments": add_args()}),
             json.dumps({"execute": "qmp_capabilities"}),
             json.dumps({"execute": ADD_COMMAND, "arguments": add_args()})]
    out = [json.loads(l) for l in _run(["--negotiate"], lines).stdout.splitlines()]
    assert "QMP" in out[0]
    assert out[1]["error"]["class"] == "CommandNotFound" and out[2:] == [{"return": {}}, {"return": {}}]


@pytest.mark.parametrize("args, text", [
    (["--region", "x"], "is not BASE:LENGTH"),
    (["--region", "0:1G:3M"], "block size"),
    (["--region", "1M:1G"], "not aligned to 256 MiB"),
    (["--region", "0:1G:2M:sharable"], "unknown region flag"),
    (["--heads", "0"], "heads must be 1..64"),
    (["--heads", "two"], "invalid int value"),
    (["--path", "cxl-dcd0"], "absolute QOM path"),
    (["--bogus"], "unrecognized arguments"),
])
def test_entry_point_bad_arguments(args, text):
    """Bad options: status 2 and one error line on stderr (after argparse's usage)."""
    proc = _run(args, [], check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("python -m dcdmap.cxl.qmp: error: ") and text in last


def test_main_in_process(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"execute": "qmp_capabilities", "id": 4}) + "\n"))
    assert main(["--heads", "3"]) == 0
    assert json.loads(capsys.readouterr().out) == {"return": {}, "id": 4}


def test_parse_region_spec():
    r = parse_region_spec("0x100000000:4G::read-only,sanitize")
    assert (r.base, r.length, r.block_size, r.read_only, r.sanitize_on_release, r.shareable) == \
        (4 * G, 4 * G, 2 * M, True, True, False)
    with pytest.raises(InvalidRangeError):
        parse_region_spec("0:1G:2M:shareable:extra")


# ============================================================================ wrapped offsets, refused draws

@pytest.mark.parametrize("offset, length, desc", [
    ((1 << 64) - 128 * M, 0, "extent with 0 length is not allowed"),
    ((1 << 64) - 128 * M + 4096, 2 * M, "dpa or len is not aligned to region block size"),
])
def test_offset_wrapping_below_the_base_keeps_qemu_order(qmp, dev, offset, length, desc):
    """An offset so large that base + offset wraps in u64 (QEMU's arithmetic) still meets
    QEMU's checks in QEMU's order: len == 0, then alignment, then the region end."""
    refused(qmp, dev, {"execute": ADD_COMMAND, "arguments": add_args(extents=ext((offset, length)))}, desc)


def test_round_trip_without_refused_requests_after_a_refused_shared_add():
    def session(dev, refuse):
        dev.add_capacity(0, 1, [(BASE1, 8 * M), (BASE1 + 64 * M, 8 * M), (BASE1 + 128 * M, 8 * M)], tag=TAG)
        accept_all(dev, 0)
        dev.add_capacity(1, 1, policy="enable-shared-access", tag=TAG)
        if refuse:
            with pytest.raises(RequestError):
                dev.add_capacity(1, 1, policy="enable-shared-access", tag=TAG)
        for _ in range(4):
            dev.add_capacity(0, 1, policy="free", length=10 * M)
        return [o.extents.tolist() for o in dev.pending_offers(0)]

    assert session(make_device(seed=2), True) == session(make_device(seed=2), False)


def test_resolve_without_recorded_extents_keeps_the_request_as_made():
    # A hand-written log entry of a free add (or tag-based release) with no "extents": there
    # is nothing to resolve to, so the command is the request as made, not a KeyError.
    add = {"op": "add_capacity", "head": 0, "region": 0, "policy": "FREE", "tag": "None",
           "request": [], "length": 2 << 20}
    cmd = command_from_entry(add, DEFAULT_PATH, [0], resolve=True)
    assert cmd["arguments"]["selection-policy"] == "free"
    rel = {"op": "release_capacity", "head": 0, "region": 0, "policy": "TAG_BASED",
           "tag": "00000000-0000-0000-0000-000000000001", "request": []}
    cmd = command_from_entry(rel, DEFAULT_PATH, [0], resolve=True)
    assert cmd["arguments"]["removal-policy"] == "tag-based"
