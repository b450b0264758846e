"""``dcdmap bench``: the table it prints, skipped peers, its reports and its errors.

These check what the command says, never how fast anything is: speed is the benchmarks'
business (benchmarks/, docs/performance.md), and a timed assertion on a shared machine only
makes a flaky test.  The runs are small (10^3 extents, best of 1), a few seconds in all.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from dcdmap import cli
from dcdmap.bench import peers
from dcdmap.commands import bench as bench_cmd
from dcdmap.errors import DcdmapError

OPTIONAL = ["SortedDict", "ncls", "superintervals", "intervaltree"]
TIME = re.compile(r"\d+(?:\.\d+)? (?:ns|µs|ms|s)\b")
RATIO = re.compile(r"(\d+(?:\.\d+)?)x[*!]*")


def table_of(out: str) -> tuple[list[str], list[str], str]:
    """(header columns, table lines, the notes below) of what ``dcdmap bench`` printed."""
    lines = out.splitlines()
    end = lines.index("")
    return lines[0].split(), lines[1:end], " ".join(" ".join(lines[end + 1:]).split())


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(["bench", *argv])
    got = capsys.readouterr()
    return rc, got.out, got.err


def test_prints_one_row_per_operation_with_positive_ratios(capsys):
    rc, out, err = run(capsys, "--sizes", "1e3", "--repeat", "1")
    assert rc == 0, err
    head, rows, notes = table_of(out)
    assert head[:4] == ["extents", "operation", "dcdmap", "numpy"]
    shown = head[3:]
    assert set(shown) == {"numpy"} | (peers.available_peers() & set(OPTIONAL))
    assert [r[len("1e3"):].strip().split("  ")[0] for r in rows] == peers.OPS
    for r in rows:
        assert r.startswith("1e3 ")
        ratios = [float(x) for x in RATIO.findall(r)]
        dashes = r.split().count("-")
        # dcdmap's time, then per peer either a time and a ratio or "-" (not measured)
        assert len(ratios) + dashes == len(shown), r
        assert len(TIME.findall(r)) == 1 + len(ratios), r
        assert all(x > 0 for x in ratios), r
    # every batch operation has numpy beside it, so every such row has a ratio
    assert all(RATIO.search(r) for r in rows if "_many" in r)
    assert "above 1, dcdmap is faster" in notes
    assert "bytes per extent at 1e3" in notes
    assert "Skipped" not in notes or set(OPTIONAL) - peers.available_peers()


def test_a_peer_that_is_not_installed_is_skipped_and_named(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ncls", None)        # "import ncls" now fails
    rc, out, err = run(capsys, "--sizes", "1e3", "--repeat", "1", "--queries", "1e4")
    assert rc == 0, err
    head, rows, notes = table_of(out)
    assert "ncls" not in head and len(rows) == len(peers.OPS)
    # other peers may be missing too (CI installs the test extra only): ncls is among them
    skipped = re.search(r"Skipped, not installed: ([^(]*) \(to compare with them: pip install 'dcdmap\[bench\]'\)", notes)
    assert skipped and "ncls" in skipped.group(1).replace(",", " ").split()


def test_numpy_alone_still_makes_a_table(capsys, monkeypatch):
    for module in ("sortedcontainers", "ncls", "superintervals", "intervaltree"):
        monkeypatch.setitem(sys.modules, module, None)
    rc, out, err = run(capsys, "--sizes", "1e2", "--repeat", "1", "--queries", "1e3")
    assert rc == 0, err
    head, rows, notes = table_of(out)
    assert head == ["extents", "operation", "dcdmap", "numpy"]
    assert "Skipped, not installed: SortedDict, ncls, superintervals, intervaltree" in notes


def test_markdown_and_json_are_the_full_report(capsys, tmp_path):
    md, js = tmp_path / "out" / "peers.md", tmp_path / "peers.json"
    rc, out, err = run(capsys, "--sizes", "1e2", "--repeat", "1", "--queries", "1e3",
                       "--markdown", str(md), "--json", str(js))
    assert rc == 0, err
    assert f"Wrote the report to {md}." in out and f"Wrote the data to {js}." in out
    text = md.read_text()
    assert text.startswith("# dcdmap ExtentMap vs peers") and "### 100 extents" in text
    payload = json.loads(js.read_text())
    assert payload["meta"]["args"]["sizes"] == [100]
    assert {r["op"] for r in payload["rows"]} == set(peers.OPS)


def test_a_wrong_answer_from_dcdmap_is_one_error_line(capsys, monkeypatch):
    real = peers.compare

    def compare(*a, **k):
        report = real(*a, **k)
        report.rows[0]["ok"] = False                      # as if translate_many had disagreed
        return report
    monkeypatch.setattr(peers, "compare", compare)
    rc, out, err = run(capsys, "--sizes", "1e2", "--repeat", "1", "--queries", "1e3")
    assert rc == 1
    assert "! the answer differed from numpy's" in out     # the table is still printed
    assert err.splitlines() == ["dcdmap bench: error: dcdmap's answer differed from numpy's in "
                                "translate_many random at 100"]


def test_suite_without_a_benchmarks_folder_is_one_error_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(bench_cmd, "suite_candidates", lambda: [tmp_path / "benchmarks"])
    rc, out, err = run(capsys, "--suite", "--sizes", "1e3")
    assert rc == 1
    assert out == ""                                       # it fails before measuring anything
    [line] = err.splitlines()
    assert line.startswith("dcdmap bench: error: --suite needs the benchmarks/ folder")


def test_suite_is_found_beside_the_package_and_filtered_by_size():
    pytest.importorskip("pytest_benchmark")
    root = Path(bench_cmd.__file__).resolve().parents[2]
    if not (root / "benchmarks" / "test_bench_extentmap.py").is_file():
        pytest.skip("not a source tree")
    assert bench_cmd.find_suite([10**3, 2 * 10**5]) == (root / "benchmarks", ["1e3"], False)
    assert bench_cmd.find_suite([10**7])[1:] == (["1e7"], True)
    with pytest.raises(DcdmapError, match="1e3, 1e4, 1e5, 1e6 and 1e7 only"):
        bench_cmd.find_suite([2 * 10**5])


@pytest.mark.parametrize("bad", ["abc", "0", "1e3,", "1.5", "-1e3"])
def test_bad_sizes_are_a_usage_error(capsys, bad):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--sizes", bad])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --sizes" in err and "Traceback" not in err


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    for example in ("dcdmap bench  ", "dcdmap bench --sizes 1e4,1e6 --repeat 5", "--suite", "--markdown"):
        assert example in out


def test_compare_peers_script_is_a_thin_wrapper(capsys):
    """benchmarks/compare_peers.py (source tree only) prints the same full report."""
    script = Path(bench_cmd.__file__).resolve().parents[2] / "benchmarks" / "compare_peers.py"
    if not script.is_file():
        pytest.skip("not a source tree")
    import importlib.util
    spec = importlib.util.spec_from_file_location("compare_peers_under_test", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.compare is peers.compare and mod.Case is peers.Case
    assert mod.main(["--sizes", "1e2", "--queries", "1e3", "--scalar-queries", "100", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "| operation | implementation | time (ops) | per op | CPU per op | ratio vs dcdmap (wall / CPU) " \
           "| ok | note |" in out
    assert "| goal | wall | CPU | target | met |" in out
