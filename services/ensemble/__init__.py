"""Ensemble service: members on Triton, calibration, aggregation, operating points."""
