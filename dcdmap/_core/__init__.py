"""The Cython engine of dcdmap: the only place with hot loops.

Nothing here imports dcdmap's model layers; they import from here (see DESIGN §3).
"""
from .extentmap import DEFAULT_LEAF_CAPACITY, Extent, ExtentArrays, ExtentMap, Ranges

__all__ = ["ExtentMap", "Extent", "ExtentArrays", "Ranges", "DEFAULT_LEAF_CAPACITY"]
