"""End to end: `dcdmap compare`, `dcdmap replay` and the dispatcher, output parsed."""
import csv
import io
import json

import pytest

from dcdmap.cli import main
from dcdmap.orchestrator import PRESENTATIONS
from dcdmap.plot import decode_png

SHORT = ["--duration", "90000", "--seed", "1"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def table(out):
    """The compare table as {metric: [cells]} (cells split on 2+ spaces)."""
    import re
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("metric"))
    rows = {}
    for line in lines[start:]:
        if not line.strip():
            break
        parts = re.split(r"\s{2,}", line.strip())
        rows[parts[0]] = parts[1:]
    return rows


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """One compare run with files, shared by the tests that read them."""
    out = tmp_path_factory.mktemp("cmp")
    buf_out, buf_err = io.StringIO(), io.StringIO()
    import contextlib
    with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
        code = main(["compare", *SHORT, "--out", str(out)])
    return code, buf_out.getvalue(), out


def test_compare_table_has_every_presentation_and_metric(compared):
    code, out, _ = compared
    assert code == 0
    rows = table(out)
    assert rows["metric"] == list(PRESENTATIONS)
    for metric in ("guest address space used", "guest objects", "control operations", "take-back",
                   "tag discoverable (R1)", "run time"):
        assert len(rows[metric]) == len(PRESENTATIONS), metric
    col = dict(zip(rows["metric"], zip(*(rows[m] for m in rows if m != "metric"))))
    disc = dict(zip(rows["metric"], rows["tag discoverable (R1)"]))
    assert disc == {"hotplug": "no", "hotplug-kmem": "no", "virtio-mem": "no",
                    "virtio-mem-extended": "yes", "type3": "yes"}
    assert dict(zip(rows["metric"], rows["take-back"]))["type3"] == "guaranteed"
    # virtio-mem reserves its whole region: more guest address space per presented byte
    per = {p: float(v.rstrip("x")) for p, v in zip(rows["metric"], rows["per byte presented"])}
    assert per["virtio-mem"] > per["type3"] == 1.0
    assert col  # every column parsed
    assert "wrote compare.png" in out


def test_compare_files(compared):
    _, out, folder = compared
    names = sorted(p.name for p in folder.iterdir())
    for p in PRESENTATIONS:
        assert f"run-{p}.jsonl" in names and f"qmp-{p}.jsonl" in names
    for n in ("compare.png", "compare.json", "compare.csv", "workload.jsonl"):
        assert n in names
    img = decode_png((folder / "compare.png").read_bytes())
    assert img.shape[2] == 3 and img.shape[1] >= 700
    data = json.loads((folder / "compare.json").read_text())
    assert [r["presentation"] for r in data["rows"]] == list(PRESENTATIONS)
    rows = list(csv.DictReader((folder / "compare.csv").open()))
    assert [r["presentation"] for r in rows] == list(PRESENTATIONS)
    assert {r["presentation"]: r["gpa_used"] for r in rows} == \
        {r["presentation"]: str(r["gpa_used"]) for r in data["rows"]}


def test_compare_json_and_csv_on_stdout(capsys):
    code, out, err = run(capsys, "compare", *SHORT, "--no-files", "--json", "--presentations", "type3,hotplug")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert [r["presentation"] for r in data["rows"]] == ["type3", "hotplug"]
    assert data["workload"]["seed"] == 1 and data["config"]["placement"] == "first-fit"
    code, out, _ = run(capsys, "compare", *SHORT, "--no-files", "--csv", "--presentations", "virtio-mem")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 1 and rows[0]["presentation"] == "virtio-mem"
    assert int(rows[0]["gpa_used"]) >= int(rows[0]["presented"]) > 0


def test_compare_reads_a_workload_trace(compared, capsys):
    _, first, folder = compared
    code, out, _ = run(capsys, "compare", "--trace", str(folder / "workload.jsonl"), "--no-files",
                       "--presentations", "type3")
    assert code == 0
    assert table(out)["guest objects"] == [table(first)["guest objects"][PRESENTATIONS.index("type3")]]


def test_replay_run_trace_identical(compared, capsys):
    _, _, folder = compared
    code, out, _ = run(capsys, "replay", str(folder / "run-hotplug-kmem.jsonl"))
    assert code == 0
    assert "replayed: identical" in out.splitlines()[0]
    assert "capacity:" in out


def test_replay_detects_a_changed_run(compared, capsys, tmp_path):
    _, _, folder = compared
    lines = (folder / "run-type3.jsonl").read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if '"do":"accept"' in line)
    act = json.loads(lines[i])
    act["bytes"] += 2 << 20
    lines[i] = json.dumps(act)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    code, out, _ = run(capsys, "replay", str(bad))
    assert code == 1
    assert "DIFFERENT" in out and "action" in out and "differs" in out


def test_replay_workload_and_qmp(compared, capsys):
    _, _, folder = compared
    code, out, _ = run(capsys, "replay", str(folder / "workload.jsonl"), "--presentation", "type3", "--json")
    data = json.loads(out)
    assert code == 0 and data["kind"] == "dcdmap-trace"
    assert data["report"]["final"]["free"] == data["report"]["final"]["total"]
    code, out, _ = run(capsys, "replay", str(folder / "qmp-type3.jsonl"), "--json")
    data = json.loads(out)
    assert data["kind"] == "qmp" and data["commands"] > 0
    assert data["state"]["capacity"]["free"] == data["state"]["capacity"]["total"]


@pytest.mark.parametrize("argv,needle", [
    (["replay", "/nonexistent/trace.jsonl"], "No such file"),
    (["compare", "--no-files", "--knob", "nope=1"], "unknown knob 'nope'"),
    (["compare", "--no-files", "--knob", "novalue"], "expected NAME=VALUE"),
    (["compare", "--no-files", "--presentations", "type3,virtio"], "unknown presentation 'virtio'"),
    (["compare", "--no-files", "--trace", "x.jsonl", "--hosts", "4"], "do not apply"),
])
def test_errors_are_one_line(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith(f"dcdmap {argv[0]}: error:") and needle in err
    assert "Traceback" not in err


def test_corrupt_traces_name_the_line(capsys, tmp_path):
    wl = tmp_path / "w.jsonl"
    wl.write_text('{"format":"dcdmap-trace","version":1,"preset":"x","seed":0,"params":{}}\n{"kind": "host",\n')
    code, _, err = run(capsys, "compare", "--trace", str(wl), "--no-files")
    assert code == 1 and "line 2" in err
    run_trace = tmp_path / "r.jsonl"
    run_trace.write_text('{"format":"dcdmap-run","version":1,"config":{}}\n')
    code, _, err = run(capsys, "replay", str(run_trace))
    assert code == 1 and "truncated" in err
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(b'{"format":"dcdmap-run"}\n\xff\xfe\n')
    code, _, err = run(capsys, "replay", str(binary))
    assert code == 1 and ":2: not UTF-8" in err
    code, _, err = run(capsys, "compare", "--trace", str(binary), "--no-files")
    assert code == 1 and ":2: not UTF-8" in err


def test_help_lists_commands_with_examples(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for name in ("compare", "replay", "check", "bench", "demo"):
        assert f"  {name}" in out and f"dcdmap {name}" in out
    for name in ("compare", "replay", "check", "bench", "demo"):
        with pytest.raises(SystemExit):
            main([name, "--help"])
        sub = capsys.readouterr().out
        assert "examples:" in sub and f"dcdmap {name}" in sub.split("examples:")[1]


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_progress_bar_draws_only_when_asked():
    from dcdmap.progress import Progress
    buf = io.StringIO()
    with Progress(10, "x", file=buf) as bar:         # not a terminal: quiet
        bar.set(10)
    assert buf.getvalue() == ""
    with Progress(10, "x", file=buf, enabled=True, delay=0) as bar:
        bar.set(5)
    assert "5/10 50%" in buf.getvalue() and buf.getvalue().endswith("\n")
