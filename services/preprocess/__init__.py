"""Preprocess service: decode and validate uploads, check tissue, Macenko stain normalization."""
