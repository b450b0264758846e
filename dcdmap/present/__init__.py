"""Presenting a host's dynamic capacity to a virtual machine (reference: presentations.md).

Three models behind one interface (:class:`~dcdmap.present.base.Presentation`): memory
hot-plug with EFI_MEMORY_SP (``hotplug``), virtio-mem (``virtio_mem``), and an emulated CXL
Type 3 device (``type3``).  Each places a host's tag groups in the guest physical address
space (engine maps) and reports the same :class:`~dcdmap.present.base.Metrics`::

    >>> from dcdmap.present import HotplugPresentation, VirtioMemPresentation, Type3Presentation
    >>> [p.name for p in (HotplugPresentation, VirtioMemPresentation, Type3Presentation)]
    ['hotplug', 'virtio-mem', 'type3']
"""
from .base import (
    BEST_EFFORT, GUARANTEED, SHUTDOWN_ONLY, GuestAddressSpace, Lifecycle, MemoryBlocks, Metrics, Presentation,
    Removal, x86_memory_block_size,
)
from .hotplug import HotplugPresentation
from .type3 import Type3Presentation
from .virtio_mem import VirtioMemDevice, VirtioMemPresentation

__all__ = ["HotplugPresentation", "VirtioMemPresentation", "VirtioMemDevice", "Type3Presentation",
           "Metrics", "Removal", "Lifecycle", "GuestAddressSpace", "MemoryBlocks", "Presentation",
           "GUARANTEED", "BEST_EFFORT", "SHUTDOWN_ONLY", "x86_memory_block_size"]
