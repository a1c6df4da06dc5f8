"""Where and how benchmark results are written: a rich table on stdout and JSON in build/bench/."""

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

OUTPUT_DIR = Path("build/bench")


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), "")  # fmt: skip
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _cell(value: Any) -> str:
    """Floats with one decimal, two below 10 (ratios); anything else as it is."""
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def write(
    name: str,
    title: str,
    columns: list[str],
    rows: list[list[Any]],
    details: dict[str, Any],
    directory: Path = OUTPUT_DIR,
) -> Path:
    """Print the table and write `<directory>/<name>.json` (build/bench/ by default); return its path."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    Console().print(table)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    body = {
        "benchmark": name,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "columns": columns,
        "rows": rows,
        **details,
    }
    path.write_text(json.dumps(body, indent=2) + "\n")
    return path
