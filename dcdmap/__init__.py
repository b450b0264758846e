"""dcdmap: CXL Dynamic Capacity extents, fast and faithful.

The engine (Cython) is re-exported here::

    >>> import dcdmap
    >>> m = dcdmap.ExtentMap()
    >>> m.insert(0x10000, 0x1000, target=0x80000)
    >>> hex(m.translate(0x10040))
    '0x80040'
"""
from . import errors, units
from ._core import (
    DEFAULT_LEAF_CAPACITY, MAX_HOSTS, Chain, Extent, ExtentArrays, ExtentMap, Ranges, SharingIndex,
    TagView, ViewCheck, ViewSegments, compose, translate_chain, verify_views,
)
from .errors import *  # noqa: F401,F403  (the hierarchy is part of the top-level API)

__version__ = "0.1.0"

__all__ = [
    "ExtentMap", "Extent", "ExtentArrays", "Ranges", "DEFAULT_LEAF_CAPACITY",
    "TagView", "ViewSegments", "ViewCheck", "verify_views",
    "compose", "Chain", "translate_chain",
    "SharingIndex", "MAX_HOSTS",
    "errors", "units", *errors.__all__,
]
