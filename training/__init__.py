"""Offline training package and `pcam` CLI: data, stain reference, training, export, calibration and
the Triton model repository the services serve. Research use only, not for diagnosis."""

RESEARCH_USE = "Research use only, not for diagnosis."
"""The notice every report, figure and prediction output of the package carries."""
