"""Offline training package and `pcam` CLI: data, stain reference, training, export, calibration and
the Triton model repository the services serve. Research use only, not for diagnosis."""
