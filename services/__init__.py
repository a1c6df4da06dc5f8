"""Online services of the PCam inference platform (research use only)."""
