"""`pcam`: the offline side's command line (research use only, not for diagnosis)."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from training.config import RunConfig, bundled_configs, load_config, save_config
from training.workdir import WorkDir

if TYPE_CHECKING:
    from collections.abc import Mapping

    from services.common.release import EnsembleRule, Member
    from training.calibrate import MemberCalibration

app = typer.Typer(
    help="PCam tumor detection, offline side: data, stain reference, training, export, calibration and "
    "the Triton model repository. Research use only, not for diagnosis.",
    no_args_is_help=True,
    add_completion=False,
)
data_app = typer.Typer(help="Data sets in PCam's HDF5 layout.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(stderr=True)  # logs, progress and errors
out = Console()  # results
log = logging.getLogger("training")

ConfigOption = Annotated[
    str,
    typer.Option("--config", "-c", help=f"Run config: a YAML path or a bundled name {bundled_configs()}."),
]
WorkdirOption = Annotated[Path, typer.Option("--workdir", "-w", help="Work directory of the run.")]
MemberOption = Annotated[
    list[str] | None, typer.Option("--member", "-m", help="Only this member (repeatable); default all.")
]


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )


@contextmanager
def _user_errors() -> Iterator[None]:
    """Expected failures (missing inputs, bad config, failed parity) end with a message, not a traceback.

    The traceback is still logged at debug level: `pcam -v ...` shows it.
    """
    try:
        yield
    except (FileNotFoundError, FileExistsError, ValueError, KeyError, RuntimeError) as exc:
        log.debug("failed", exc_info=True)
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # no repr quotes
        console.print(f"[red]error:[/red] {message}")
        raise typer.Exit(1) from exc


def _pipeline():
    # Imported on use: it pulls in torch and timm, which `pcam --help` should not wait for.
    from training import pipeline

    return pipeline


def _start(config: str, workdir: Path) -> tuple[RunConfig, WorkDir]:
    cfg = load_config(config)
    work = WorkDir(workdir)
    save_config(cfg, work.config)
    return cfg, work


@data_app.command("synthesize")
def synthesize(
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the PCam-named files.")],
    train: Annotated[int, typer.Option(help="Training patches.")] = 8192,
    valid: Annotated[int, typer.Option(help="Validation patches.")] = 2048,
    test: Annotated[int, typer.Option(help="Test patches.")] = 2048,
    seed: Annotated[int, typer.Option(help="Same seed, same data.")] = 0,
) -> None:
    """Write a synthetic PCam-like set (H&E-looking patches, center-32 labels, periphery decoys)."""
    from training.data.synthetic import synthesize as write

    with _user_errors():
        summary = write(output, {"train": train, "valid": valid, "test": test}, seed)
    for split, counts in summary.items():
        out.print(f"{split}: {counts}")


SplitOption = Annotated[
    list[str] | None,
    typer.Option("--split", "-s", help="Only this split: train, valid or test (repeatable); default all."),
]


@data_app.command("download")
def download(
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the PCam files.")],
    base_url: Annotated[
        str | None, typer.Option(help="Where the files are; default Zenodo record 2546921.")
    ] = None,
    split: SplitOption = None,
    keep_gz: Annotated[bool, typer.Option("--keep-gz", help="Keep the .h5.gz next to the .h5.")] = False,
) -> None:
    """Download PCam (resumable), check every MD5 and gunzip the HDF5 files; skips verified files."""
    from training.data import download as dl
    from training.data.pcam_h5 import SPLITS

    with _user_errors():
        paths = dl.download(output, split or SPLITS, base_url or dl.BASE_URL, keep_gz)
    for path in paths:
        out.print(str(path))


@data_app.command("verify")
def verify(
    directory: Annotated[Path, typer.Argument(help="Directory with the PCam files.")],
    split: SplitOption = None,
) -> None:
    """Check presence and MD5 of every PCam file; exits 1 if any is missing or wrong."""
    from training.data.download import verify as check
    from training.data.pcam_h5 import SPLITS

    with _user_errors():
        checks = check(directory, split or SPLITS)
    table = Table(title=f"PCam files in {directory}")
    for column in ("file", "status", "expected md5", "actual md5"):
        table.add_column(column, overflow="fold")  # names and digests whole, even in a narrow terminal
    for c in checks:
        status = c.status if c.ok else f"[red]{c.status}[/red]"
        table.add_row(c.name, status, c.expected or "", c.actual or "")
    out.print(table)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


@app.command("stain-reference")
def stain_reference(config: ConfigOption, workdir: WorkdirOption) -> None:
    """Fit the Macenko stain reference on training patches and cache stain-normalized train/valid splits.

    Synthesizes the configured data set into the work dir first if it is not there.
    """
    with _user_errors():
        cfg, work = _start(config, workdir)
        _pipeline().prepare_data(cfg, work)
        reference = _pipeline().fit_stain(cfg, work)
    out.print(reference.model_dump())


@app.command("train")
def train(config: ConfigOption, workdir: WorkdirOption, member: MemberOption = None) -> None:
    """Train members on the normalized splits; keeps each member's best epoch by validation AUC."""
    with _user_errors():
        cfg, work = _start(config, workdir)
        results = _pipeline().train(cfg, work, member)
    for name, result in results.items():
        out.print(f"{name}: best epoch {result.best_epoch}, valid AUC {result.best_auc:.4f}")


@app.command("export")
def export(config: ConfigOption, workdir: WorkdirOption, member: MemberOption = None) -> None:
    """Export trained members to ONNX, check parity with PyTorch, collect validation logits."""
    with _user_errors():
        cfg, work = _start(config, workdir)
        paths = _pipeline().export(cfg, work, member)
    for name, path in paths.items():
        out.print(f"{name}: {path}")


@app.command("calibrate")
def calibrate(config: ConfigOption, workdir: WorkdirOption) -> None:
    """Fit temperatures and the ensemble's operating points on validation logits."""
    with _user_errors():
        cfg, work = _start(config, workdir)
        result = _pipeline().calibrate_members(cfg, work)
    _print_summary(result.members, result.ensemble)


@app.command("build-repository")
def build_repository(
    config: ConfigOption,
    output: Annotated[Path, typer.Option("--output", "-o", help="Model repository directory to create.")],
    workdir: Annotated[
        Path | None,
        typer.Option("--workdir", "-w", help="Keep intermediate files here (default: temporary)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing model repository.")] = False,
) -> None:
    """Run the whole pipeline and write the Triton model repository with its release.json."""
    started = time.perf_counter()
    with _user_errors():
        cfg = load_config(config)
        if workdir is None:
            with tempfile.TemporaryDirectory(prefix="pcam-work-") as tmp:
                manifest = _pipeline().build_repository(cfg, output, WorkDir(Path(tmp)), force)
        else:
            manifest = _pipeline().build_repository(cfg, output, WorkDir(workdir), force)
    _print_summary(
        {m.name: m for m in manifest.members}, manifest.ensemble, title=f"release {manifest.release_id}"
    )
    out.print(f"model repository {output} built in {time.perf_counter() - started:.0f} s")


@app.command("evaluate")
def evaluate(
    repository: Annotated[
        Path, typer.Option("--repository", "-r", help="Built model repository (release.json).")
    ],
    data: Annotated[Path, typer.Option("--data", "-d", help="Directory with PCam-named HDF5 files.")],
    split: Annotated[str, typer.Option("--split", "-s", help="train, valid or test.")] = "test",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the report as JSON here.")
    ] = None,
    workdir: Annotated[
        Path | None,
        typer.Option("--workdir", "-w", help="Keep the normalized split here (default: temporary)."),
    ] = None,
    threads: Annotated[int, typer.Option(help="onnxruntime intra-op threads.")] = 1,
) -> None:
    """Evaluate a model repository on a split with the serving rules: AUC, ECE, operating points + 95 % CIs."""
    from training.evaluate import evaluate as run_evaluation

    with _user_errors():
        report = run_evaluation(repository, data, split, workdir, threads)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(report.model_dump_json(indent=2) + "\n")

    def num(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    def ci(value: float | None, interval: tuple[float, float] | None) -> str:
        return num(value) if interval is None else f"{num(value)} [{interval[0]:.3f}, {interval[1]:.3f}]"

    title = f"release {report.release_id} on {report.split}: {report.patches} patches, prevalence {report.prevalence:.3f}"
    table = Table(title=title, caption=f"research use only; data: {report.data_source}"
                  + (f" ({report.note})" if report.note else ""))  # fmt: skip
    for column in ("model", "temperature", "weight", "AUC", "ECE"):
        table.add_column(column)
    for name, m in report.members.items():
        table.add_row(name, f"{m.temperature:.3f}", f"{m.weight:g}", num(m.auc), f"{m.ece:.4f}")
    table.add_row("ensemble", "", "", num(report.auc), f"{report.ece:.4f}")
    out.print(table)
    points = Table(title=f"operating points (95 % CI, bootstrap by {report.bootstrap})")
    for column in ("name", "threshold", "sensitivity", "specificity", "accuracy"):
        points.add_column(column)
    for name, p in report.operating_points.items():
        points.add_row(name, f"{p.threshold:.4f}", ci(p.sensitivity, p.sensitivity_ci),
                       ci(p.specificity, p.specificity_ci), ci(p.accuracy, p.accuracy_ci))  # fmt: skip
    out.print(points)
    if report.note:
        out.print(f"[yellow]{report.note}[/yellow]")


def _print_summary(
    members: Mapping[str, Member | MemberCalibration], ensemble: EnsembleRule, title: str = "validation"
) -> None:
    """Validation metrics per member and of the ensemble, and the operating points, as tables."""
    table = Table(title=title)
    for column in ("member", "temperature", "AUC", "NLL before", "NLL after", "ECE after"):
        table.add_column(column)
    for name, m in members.items():
        metrics = m.metrics
        table.add_row(
            name,
            f"{m.temperature:.3f}",
            *(f"{metrics[k]:.4f}" for k in ("auc", "nll_before", "nll_after", "ece_after")),
        )
    table.add_row("ensemble", "", f"{ensemble.metrics['auc']:.4f}", "", f"{ensemble.metrics['nll']:.4f}",
                  f"{ensemble.metrics['ece_after']:.4f}")  # fmt: skip
    out.print(table)
    points = Table(title="operating points")
    for column in ("name", "threshold", "sensitivity", "specificity"):
        points.add_column(column)
    for name, p in ensemble.operating_points.items():
        points.add_row(name, f"{p.threshold:.4f}", f"{p.sensitivity:.3f}", f"{p.specificity:.3f}")
    out.print(points)


def main() -> None:
    """Console script entry point."""
    app()
