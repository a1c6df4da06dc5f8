"""Data sets in PCam's HDF5 layout: PCam itself and a synthetic PCam-like set."""
