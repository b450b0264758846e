"""The Cython engine of dcdmap: the only place with hot loops.

Nothing here imports dcdmap's model layers; they import from here (see DESIGN §3).
"""
from .compose import Chain, compose, translate_chain
from .extentmap import DEFAULT_LEAF_CAPACITY, Extent, ExtentArrays, ExtentMap, Ranges
from .sharing import MAX_HOSTS, SharingIndex
from .tagview import TagView, ViewCheck, ViewSegments, verify_views

__all__ = [
    "ExtentMap", "Extent", "ExtentArrays", "Ranges", "DEFAULT_LEAF_CAPACITY",
    "TagView", "ViewSegments", "ViewCheck", "verify_views",
    "compose", "Chain", "translate_chain",
    "SharingIndex", "MAX_HOSTS",
]
