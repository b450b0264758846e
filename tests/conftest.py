"""Shared test configuration: Hypothesis profiles.

* ``default`` (used unless HYPOTHESIS_PROFILE says otherwise): 100 examples of 50 steps per
  state machine, about 40 s for the five ExtentMap machines on a 2-core machine;
* ``ci``: 600 examples of 100 steps (about 10-15 minutes for the machines), for a nightly job;
* ``dev``: a quick smoke run while editing the engine.

Choose one with ``HYPOTHESIS_PROFILE=ci python -m pytest``.
"""
import os
import sys

from hypothesis import HealthCheck, settings

# ``python -m pytest`` from the repository root puts the root on sys.path; a bare ``pytest``
# does not, and the tests import the in-place built package from the work tree.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# No deadline: a step of a state machine may build a map of thousands of extents.  Failures
# print a reproduce blob; locally the example database (.hypothesis/, git-ignored) replays
# them first on the next run; the ci profile keeps no database.
_common = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

settings.register_profile("default", max_examples=100, stateful_step_count=50, **_common)
settings.register_profile("dev", max_examples=10, stateful_step_count=25, **_common)
settings.register_profile("ci", max_examples=600, stateful_step_count=100, database=None, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# When a state machine fails, Hypothesis shrinks the failing run for up to five minutes; on a
# small machine that can dwarf the whole suite.  Outside the ci profile, give up shrinking
# after 30 seconds (the example printed is then merely short, not minimal).  This knob is
# internal to Hypothesis, hence the guard.
if os.environ.get("HYPOTHESIS_PROFILE", "default") != "ci":
    try:
        from hypothesis.internal.conjecture import engine as _engine
        if hasattr(_engine, "MAX_SHRINKING_SECONDS"):
            _engine.MAX_SHRINKING_SECONDS = 30
    except ImportError:  # pragma: no cover - a future Hypothesis without the module
        pass
