"""dcdmap's benchmark workload and peer comparison, importable from an installed dcdmap.

* :mod:`dcdmap.bench.data` -- the seeded workload every benchmark uses (extents, queries, the
  numpy reference answer, the report writer);
* :mod:`dcdmap.bench.peers` -- ExtentMap against numpy, SortedDict, ncls, superintervals and
  intervaltree, in one process (the peers are optional: ``pip install 'dcdmap[bench]'``).

``dcdmap bench`` prints the comparison's summary table; ``benchmarks/compare_peers.py`` (in
the source tree) prints and writes its full report.  Neither module is imported by
``import dcdmap``.
"""
