"""The C-level entry points, from another Cython module, without the GIL.

A tiny module is compiled at test time (in tmp_path) that cimports ExtentMap, TagView and
Chain through the installed .pxd files and calls ``translate_c`` / ``reverse_c`` inside
``with nogil:``; its answers must equal the Python API's.  Skipped only when there is no C
compiler.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import pytest

from dcdmap import Chain, ExtentMap, TagView
from dcdmap.errors import UnmappedError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
U64_MAX = 2**64 - 1

PYX = textwrap.dedent('''
    # cython: language_level=3
    from libc.stdlib cimport malloc, free
    from libc.stdint cimport uint64_t
    from dcdmap._core.extentmap cimport ExtentMap
    from dcdmap._core.tagview cimport TagView
    from dcdmap._core.compose cimport Chain

    def run(ExtentMap m, TagView v, Chain c, list values):
        """For each value x: (map ok, out), (view forward ok, out), (view reverse ok, out),
        (chain ok, out, stage), all computed in one loop without the GIL."""
        cdef Py_ssize_t n = len(values), i
        cdef uint64_t* q = <uint64_t*>malloc(n * sizeof(uint64_t) + 1)
        cdef uint64_t* res = <uint64_t*>malloc(4 * n * sizeof(uint64_t) + 1)
        cdef unsigned char* ok = <unsigned char*>malloc(4 * n + 1)
        cdef Py_ssize_t* stage = <Py_ssize_t*>malloc(n * sizeof(Py_ssize_t) + 1)
        cdef uint64_t out
        cdef Py_ssize_t st
        if q == NULL or res == NULL or ok == NULL or stage == NULL:
            free(q); free(res); free(ok); free(stage)
            raise MemoryError()
        try:
            for i in range(n):
                q[i] = values[i]
            with nogil:
                for i in range(n):
                    out = 0
                    ok[4 * i] = m.translate_c(q[i], &out)
                    res[4 * i] = out
                    out = 0
                    ok[4 * i + 1] = v.translate_c(q[i], &out)
                    res[4 * i + 1] = out
                    out = 0
                    ok[4 * i + 2] = v.reverse_c(q[i], &out)
                    res[4 * i + 2] = out
                    out = 0
                    st = -1
                    ok[4 * i + 3] = c.translate_c(q[i], &out, &st)
                    res[4 * i + 3] = out
                    stage[i] = st
            return [((bool(ok[4 * i]), res[4 * i]),
                     (bool(ok[4 * i + 1]), res[4 * i + 1]),
                     (bool(ok[4 * i + 2]), res[4 * i + 2]),
                     (bool(ok[4 * i + 3]), res[4 * i + 3], stage[i])) for i in range(n)]
        finally:
            free(q); free(res); free(ok); free(stage)
''')

SETUP = textwrap.dedent('''
    import sys
    from setuptools import Extension, setup
    from Cython.Build import cythonize
    root = sys.argv.pop(1)
    ext = Extension("embed_probe", ["embed_probe.pyx"],
                    include_dirs=[root, root + "/dcdmap/_core"])
    setup(name="embed_probe", script_args=["build_ext", "--inplace", "-q"],
          ext_modules=cythonize([ext], include_path=[root], quiet=True,
                                compiler_directives={"language_level": 3}))
''')


def have_compiler():
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) is not None or shutil.which("cc") is not None or shutil.which("gcc") is not None


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    if not have_compiler():
        pytest.skip("no C compiler to build a Cython module with")
    d = tmp_path_factory.mktemp("embed")
    (d / "embed_probe.pyx").write_text(PYX)
    (d / "setup_probe.py").write_text(SETUP)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "setup_probe.py", ROOT], cwd=d, env=env,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"building the probe failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    built = [p for p in d.iterdir() if p.name.startswith("embed_probe") and p.suffix in (".so", ".pyd")]
    assert built, list(d.iterdir())
    spec = importlib.util.spec_from_file_location("embed_probe", built[0])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def python_answers(m, v, c, x):
    try:
        a = (True, m.translate(x))
    except UnmappedError:
        a = (False, 0)
    try:
        b = (True, v.translate(x))
    except UnmappedError:
        b = (False, 0)
    r = v.reverse(x)
    rv = (False, 0) if r is None else (True, r)
    try:
        ch = (True, c.translate(x), -1)
    except UnmappedError as e:
        stage = int(str(e).split("stage ")[1].split()[0])
        ch = (False, 0, stage)
    return a, b, rv, ch


def values_for(*spans):
    out = []
    for lo, hi, step in spans:
        out += list(range(lo, hi, step))
    return out + [U64_MAX, U64_MAX - 63, 2**63]


@pytest.mark.parametrize("interleaved", [False, True])
def test_c_level_entry_points(probe, interleaved):
    m = ExtentMap(leaf_capacity=4)
    for k in range(12):                          # several leaves, holes between extents
        m.insert(0x1000 * k, 0x800, target=0x100000 + 0x3000 * k, label=k)
    if interleaved:
        v = TagView([0x9000, 0x1000, 0x5000], [0x800] * 3, [2, 0, 1], chunk_size=0x200)
    else:
        v = TagView([0x9000, 0x1000, 0x5000], [0x1000, 0x800, 0x800], [2, 0, 1])
    gpa = ExtentMap()
    gpa.insert(0x100000, 0x10000, target=0x7000000)
    hpa = ExtentMap()
    hpa.insert(0x7000000, 0x6000, target=0x200)
    c = Chain([m, gpa, hpa])
    xs = values_for((0, 0xd000, 0x40), (0x100000, 0x130000, 0x1000))
    got = probe.run(m, v, c, xs)
    exp = [python_answers(m, v, c, x) for x in xs]
    assert got == exp
    # every kind of answer shows up
    assert any(g[0][0] for g in got) and any(not g[0][0] for g in got)
    assert any(g[1][0] for g in got) and any(not g[1][0] for g in got)
    assert any(g[2][0] for g in got) and any(not g[2][0] for g in got)
    assert {g[3][2] for g in got} >= {-1, 0, 1, 2}


def test_c_level_at_the_top(probe):
    m = ExtentMap()
    m.insert(2**64 - 0x1000, 0x1000, target=0)
    v = TagView([2**64 - 0x1000, 0], [0x1000, 0x1000], [0, 1])
    back = ExtentMap()
    back.insert(0, 0x1000, target=2**64 - 0x1000)
    c = Chain([m, back])
    xs = [0, 0xfff, 0x1000, 0x1fff, 0x2000, 2**64 - 0x1000, U64_MAX]
    assert probe.run(m, v, c, xs) == [python_answers(m, v, c, x) for x in xs]
