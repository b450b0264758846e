"""The radix sort is C-level only (cimport dcdmap._core._sort); nothing is exported to Python."""
