"""Run the examples in the compiled engine's docstrings (STYLE item 12).

pytest's ``--doctest-modules`` only imports ``.py`` files, so the examples in
``dcdmap/_core/extentmap.pyx`` (compiled; the docstrings live in the extension module) are
never collected by it.  Here they are gathered two ways and merged: ``doctest.DocTestFinder``
on the module, and a walk over the module's public classes and everything defined on them
(methods, classmethods, properties), parsed with ``DocTestParser``; the walk catches what the
finder's module-membership checks may skip for compiled functions.  Each docstring runs as
its own test, and a floor on the number of examples keeps this from passing vacuously if the
docstrings are ever lost (e.g. a build without them).
"""
from __future__ import annotations

import doctest

import pytest

import dcdmap
import dcdmap._core.extentmap as extentmap

# Docstrings that must carry examples, and the least number of examples overall (22 when
# this was written).
MUST_HAVE_EXAMPLES = ["ExtentMap", "ExtentMap.insert", "ExtentMap.find_free", "ExtentMap.coalesce",
                      "ExtentMap.from_arrays", "Extent"]
MIN_EXAMPLES = 20
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def globs():
    g = dict(vars(extentmap))          # ExtentMap, Extent, np, ... as the docstrings assume
    g["dcdmap"] = dcdmap
    return g


def collect():
    """name -> DocTest for every docstring of the engine module that holds an example."""
    parser = doctest.DocTestParser()
    tests = {}

    def add(name, doc):
        if isinstance(doc, str) and ">>>" in doc and name not in tests:
            tests[name] = parser.get_doctest(doc, globs(), name, extentmap.__file__, 0)

    for t in doctest.DocTestFinder(exclude_empty=True).find(extentmap, globs=globs()):
        name = t.name.removeprefix(extentmap.__name__ + ".")
        if t.examples and name not in tests:
            tests[name] = t
    add("extentmap", extentmap.__doc__)
    for cname in extentmap.__all__:
        cls = getattr(extentmap, cname)
        if not isinstance(cls, type):
            continue
        add(cname, cls.__doc__)
        for attr in vars(cls):
            value = getattr(cls, attr, None)
            if value is not None:
                add(f"{cname}.{attr}", getattr(value, "__doc__", None))
    return tests


TESTS = collect()


def test_enough_examples_are_found():
    total = sum(len(t.examples) for t in TESTS.values())
    assert total >= MIN_EXAMPLES, f"only {total} doctest examples in {sorted(TESTS)}"
    missing = [name for name in MUST_HAVE_EXAMPLES if name not in TESTS]
    assert not missing, f"no examples found in {missing}"


@pytest.mark.parametrize("name", sorted(TESTS))
def test_docstring_examples(name):
    test = TESTS[name]
    test.globs = globs()               # fresh for each run
    out = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    result = runner.run(test, out=out.append)
    assert result.attempted == len(test.examples) > 0
    assert result.failed == 0, "".join(out)
