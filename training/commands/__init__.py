"""What the `pcam` commands do beyond parsing their options; training.cli parses and dispatches here.

steps: the pipeline's commands over a work dir; evaluation: `evaluate` and `validate`; views: the
tables and lines the commands print.
"""
