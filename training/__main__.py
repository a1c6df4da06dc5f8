"""`python -m training` is the `pcam` CLI."""

from training.cli import main

main()
