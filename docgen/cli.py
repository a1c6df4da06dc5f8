"""docs/reference/cli.md: the `pcam` command line, written by typer's own Markdown generator."""

import typer
import typer.cli
import typer.main

from docgen.markdown import banner

SOURCE = "training/cli.py (typer's generator, as `typer training.cli utils docs --name pcam`)"
NAME = "pcam"


def cli_markdown() -> str:
    """The whole CLI page: what `typer training.cli utils docs --name pcam` prints, after the banner."""
    from training.cli import app  # imported on use: the training extra's dependencies (typer, rich)

    command = typer.main.get_command(app)
    # As `typer ... utils docs` does: the app's markup mode decides how help text becomes HTML.
    context = typer.Context(command, obj={typer.cli.MARKUP_MODE_KEY: app.rich_markup_mode})
    docs = typer.cli.get_docs_for_click(obj=command, ctx=context, name=NAME)
    return banner(SOURCE) + "\n" + docs.strip() + "\n"
