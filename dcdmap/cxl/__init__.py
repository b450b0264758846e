"""The CXL Dynamic Capacity protocol model.

``records``: every DC wire structure, packed and unpacked byte for byte, one record at a time
(frozen dataclasses) or many at once (numpy structured arrays).  Its public names are
re-exported here::

    >>> from dcdmap import cxl
    >>> cxl.unpack_extent(cxl.pack_extent(cxl.DcExtent(0x1000, 0x40))).length
    64
"""
from . import records
from .records import *  # noqa: F401,F403  (the records API is part of dcdmap.cxl)
from .regions import Region, check_regions
from .device import Capacity, Device, Offer
from .host import DaxDevice, Host, TagGroup

__all__ = ["records", *records.__all__, "Region", "check_regions", "Device", "Offer", "Capacity",
           "Host", "TagGroup", "DaxDevice"]
