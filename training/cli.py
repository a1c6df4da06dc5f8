"""`pcam`: the offline side's command line (research use only, not for diagnosis)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler

from training import RESEARCH_USE
from training.commands import views
from training.config import bundled_configs, load_config
from training.validate import SENSITIVITY_TARGET, SPECIFICITY_TARGET, VALIDATED_POINT

if TYPE_CHECKING:
    from rich.console import RenderableType

    from pcam_core.release import ReleaseManifest

app = typer.Typer(
    help="PCam tumor detection, offline side: data, stain reference, training, export, calibration and "
    "the Triton model repository. Research use only, not for diagnosis.",
    no_args_is_help=True,
)
data_app = typer.Typer(help="Data sets in PCam's HDF5 layout.", no_args_is_help=True)
app.add_typer(data_app, name="data")
slide_app = typer.Typer(
    help="Whole-slide images: PCam's patches over a slide's tissue, a calibrated heatmap, regions and a "
    "summary. Research use only, not for diagnosis.",
    no_args_is_help=True,
)
app.add_typer(slide_app, name="slide")
console = Console(stderr=True)  # logs, progress and errors
out = Console()  # results
log = logging.getLogger("training")

InProcessOption = Annotated[
    Path | None, typer.Option("--repository", "-r", help="Score in-process with this built model repository.")
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option("--api-key", envvar="PCAM_API_KEY", help="Sent as X-API-Key to the gateway (--url)."),
]
ConfigOption = Annotated[
    str,
    typer.Option("--config", "-c", help=f"Run config: a YAML path or a bundled name {bundled_configs()}."),
]
WorkdirOption = Annotated[Path, typer.Option("--workdir", "-w", help="Work directory of the run.")]
MemberOption = Annotated[
    list[str] | None, typer.Option("--member", "-m", help="Only this member (repeatable); default all.")
]
TargetOption = Annotated[
    str,
    typer.Option(
        "--target",
        "-t",
        help="Serving target: cpu (python backend, KIND_CPU) or gpu (onnxruntime backend with TensorRT, "
        "KIND_GPU, warmup); docs/architecture.md#model-repository.",
    ),
]
PrecisionOption = Annotated[
    str,
    typer.Option(
        "--precision",
        help="fp32, or int8: serve each member's static-QDQ INT8 export (`pcam export --format int8`), "
        "calibrated on its own validation logits; cpu target only.",
    ),
]


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )


@contextmanager
def _user_errors(code: int = 1) -> Iterator[None]:
    """Expected failures (missing inputs, bad config, failed parity) end with a message, not a traceback.

    The traceback is still logged at debug level: `pcam -v ...` shows it. `code` is the exit status
    (`pcam validate` keeps 1 for "targets not met").
    """
    try:
        yield
    except (ValueError, KeyError, RuntimeError, OSError) as exc:  # OSError: missing, unreadable, corrupt HDF5
        _fail(exc, code)
    except Exception as exc:
        # onnxruntime reports a missing or broken model with exceptions of its own (plain Exception
        # subclasses); anything else is a bug and keeps its traceback.
        if not type(exc).__module__.startswith("onnxruntime"):
            raise
        _fail(exc, code)


def _fail(exc: Exception, code: int) -> NoReturn:
    """Print an expected failure as one line (the traceback at debug level) and exit with code."""
    log.debug("failed", exc_info=True)
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # no repr quotes
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code) from exc


def _steps():
    # Imported on use: it pulls in torch and timm, which `pcam --help` should not wait for.
    from training.commands import steps

    return steps


def _show(items: Iterable[RenderableType]) -> None:
    for item in items:
        out.print(item)


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
    out.print(views.files_table(directory, checks))
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


@app.command("stain-reference")
def stain_reference(config: ConfigOption, workdir: WorkdirOption) -> None:
    """Fit the Macenko stain reference on training patches and cache stain-normalized train/valid splits.

    Synthesizes the configured data set into the work dir first if it is not there.
    """
    with _user_errors():
        reference = _steps().stain_reference(config, workdir)
    out.print(reference.model_dump())


@app.command("train")
def train(
    config: ConfigOption,
    workdir: WorkdirOption,
    member: MemberOption = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Ignore saved resume states and train from scratch.")
    ] = False,
) -> None:
    """Train members on the normalized splits; keeps each member's best epoch by validation AUC.

    Resumes an interrupted run from its last finished epoch. Data-parallel under
    `torchrun --nproc_per_node N -m training train ...` (NCCL on GPUs, gloo on the CPU).
    """
    with _user_errors():
        results = _steps().train(config, workdir, member, fresh)
    for name, result in (results or {}).items():  # None: not torchrun's main process
        out.print(f"{name}: best epoch {result.best_epoch}, valid AUC {result.best_auc:.4f}")


@app.command("cv")
def cross_validate(
    config: ConfigOption,
    workdir: WorkdirOption,
    member: MemberOption = None,
    folds: Annotated[int, typer.Option("--folds", "-k", min=2, help="Number of folds.")] = 5,
) -> None:
    """Stratified k-fold cross-validation on the training split (grouped by slide when the meta CSV has slides).

    Each fold picks its best epoch on the validation split and is scored on its held-out part;
    writes cv/report.json. Data-parallel under torchrun, like `train`.
    """
    with _user_errors():
        done = _steps().cross_validate(config, workdir, member, folds)
    if done is None:  # not torchrun's main process
        return
    report, work = done
    out.print(views.cv_table(report, folds))
    out.print(f"report: {work.cv_report}")


@app.command("export")
def export(
    config: ConfigOption,
    workdir: WorkdirOption,
    member: MemberOption = None,
    formats: Annotated[
        list[str] | None,
        typer.Option(
            "--format",
            "-f",
            help="onnx, torchscript, int8 or tensorrt (repeatable); default the config's export.formats "
            "(onnx). ONNX is always written.",
        ),
    ] = None,
) -> None:
    """Export trained members to ONNX (and TorchScript, INT8, TensorRT), check parity, collect validation logits.

    Writes members/<name>/export.json: files, sha256, parity, the INT8 validation AUC change and speedup.
    """
    with _user_errors():
        reports, work = _steps().export(config, workdir, member, formats)
    _show(views.export_lines(reports, work))


@app.command("calibrate")
def calibrate(
    config: ConfigOption,
    workdir: WorkdirOption,
    precision: Annotated[
        str,
        typer.Option(
            "--precision",
            help="fp32, or int8: fit on the INT8 graphs' validation logits (for `pcam package --precision "
            "int8`; needs `pcam export --format int8`).",
        ),
    ] = "fp32",
) -> None:
    """Fit temperatures and the ensemble's operating points on validation logits."""
    with _user_errors():
        result = _steps().calibrate(config, workdir, precision)
    _show(views.summary(result.members, result.ensemble))


@app.command("build-repository")
def build_repository(
    config: ConfigOption,
    output: Annotated[Path, typer.Option("--output", "-o", help="Model repository directory to create.")],
    workdir: Annotated[
        Path | None,
        typer.Option("--workdir", "-w", help="Keep intermediate files here (default: temporary)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing model repository.")] = False,
    target: TargetOption = "cpu",
    precision: PrecisionOption = "fp32",
) -> None:
    """Run the whole pipeline and write the Triton model repository with its release.json.

    An existing --workdir is reused: finished training is not redone. With --precision int8 the export
    adds the int8 format.
    """
    started = time.perf_counter()
    with _user_errors():
        manifest = _steps().build_repository(config, output, workdir, force, target, precision)
    _show_release(manifest)
    out.print(
        f"model repository {output} ({target}, {precision}) built in {time.perf_counter() - started:.0f} s"
    )


@app.command("package")
def package(
    config: ConfigOption,
    workdir: WorkdirOption,
    output: Annotated[Path, typer.Option("--output", "-o", help="Model repository directory to create.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing model repository.")] = False,
    target: TargetOption = "cpu",
    rolling: Annotated[
        bool,
        typer.Option(
            "--rolling",
            help="Add the release to a serving repository as new model versions; the services switch "
            "to it without a restart or a failed request.",
        ),
    ] = False,
    precision: PrecisionOption = "fp32",
) -> None:
    """Write the model repository and release.json from a work dir whose steps have all run (redoes none)."""
    with _user_errors():
        manifest = _steps().package(config, workdir, output, force, target, rolling, precision)
    _show_release(manifest)
    out.print(f"model repository {output} ({target}, {precision}) written")


@app.command("retarget")
def retarget(
    repository: Annotated[
        Path, typer.Option("--repository", "-r", help="A built model repository (release.json).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model repository directory to create.")],
    target: TargetOption = "gpu",
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="Run config whose `triton:` settings to use; default: defaults."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing model repository.")] = False,
) -> None:
    """Write a built repository's release for another serving target: same release.json, same model.onnx.

    No training or export: each member's model.onnx is checked against release.json's sha256 and copied.
    """
    from training.config import TritonConfig
    from training.repository import retarget_repository

    with _user_errors():
        triton = load_config(config).triton if config else TritonConfig()
        manifest = retarget_repository(repository, output, triton, target, force)
    out.print(f"model repository {output} ({target}): release {manifest.release_id}")


RepositoryOption = Annotated[
    Path, typer.Option("--repository", "-r", help="Built model repository (release.json).")
]
DataOption = Annotated[Path, typer.Option("--data", "-d", help="Directory with PCam-named HDF5 files.")]
EvalSplitOption = Annotated[str, typer.Option("--split", "-s", help="train, valid or test.")]
ReportDirOption = Annotated[
    Path | None,
    typer.Option("--report-dir", help="Write report.json, report.md and the PNG figures here."),
]
EvalWorkdirOption = Annotated[
    Path | None,
    typer.Option("--workdir", "-w", help="Keep the normalized split here (default: temporary)."),
]
ThreadsOption = Annotated[int, typer.Option(help="onnxruntime intra-op threads.")]


@app.command("evaluate")
def evaluate(
    repository: RepositoryOption,
    data: DataOption,
    split: EvalSplitOption = "test",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the report as JSON here.")
    ] = None,
    report_dir: ReportDirOption = None,
    workdir: EvalWorkdirOption = None,
    threads: ThreadsOption = 1,
) -> None:
    """Evaluate a model repository on a split with the serving rules: AUC, Brier, ECE, operating points + 95 % CIs."""
    from training.commands import evaluation

    with _user_errors():
        done = evaluation.evaluate(repository, data, split, workdir, threads, output, report_dir)
    _show(views.evaluation(done.report))
    if done.markdown is not None:
        out.print(f"report: {done.markdown}")


VALIDATE_HELP = (
    f"Say plainly whether the clinical targets (sensitivity >= {SENSITIVITY_TARGET:g}, specificity >= "
    f"{SPECIFICITY_TARGET:g}) hold on a split: exit 0 if met, 1 if not, 2 on an error.\n\n"
    "Evaluates as `pcam evaluate` does, then checks the targets at every operating point, on point "
    "estimates and on 95 % CI lower bounds; the exit status is that of --operating-point."
)


@app.command("validate", help=VALIDATE_HELP)
def validate(
    repository: RepositoryOption,
    data: DataOption,
    split: EvalSplitOption = "test",
    operating_point: Annotated[
        str,
        typer.Option(
            "--operating-point",
            "-p",
            help="The operating point whose result is the answer, named in advance (aliases accepted).",
        ),
    ] = VALIDATED_POINT,
    require_ci: Annotated[
        bool,
        typer.Option(
            "--require-ci", help="Ask the 95 % CI lower bounds, not only the estimates, to meet the targets."
        ),
    ] = False,
    report_dir: ReportDirOption = None,
    workdir: EvalWorkdirOption = None,
    threads: ThreadsOption = 1,
) -> None:
    """Clinical targets on a split; the help text is VALIDATE_HELP, built from the target constants."""
    from training.commands import evaluation

    with _user_errors(code=2):
        done = evaluation.validate(
            repository, data, split, operating_point, require_ci, workdir, threads, report_dir
        )
    _show(views.evaluation(done.report))
    _show(views.verdict_lines(done.verdict, done.notes))
    if done.markdown is not None:
        out.print(f"report: {done.markdown}")
    raise typer.Exit(0 if done.verdict.met else 1)


@app.command("predict")
def predict(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Image files, or directories (their image files, sorted, not recursive)."),
    ],
    repository: InProcessOption = None,
    url: Annotated[
        str | None,
        typer.Option("--url", help="Score through this gateway instead, e.g. http://gateway:8080."),
    ] = None,
    api_key: ApiKeyOption = None,
    operating_point: Annotated[
        str | None,
        typer.Option(
            "--operating-point",
            "-p",
            help="screening, balanced or high_specificity (or an alias); default balanced.",
        ),
    ] = None,
    tta: Annotated[
        bool,
        typer.Option("--tta", help="Mean over the 8 dihedral transforms; their spread is the uncertainty."),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the rows as CSV here ('-': stdout); default a table."),
    ] = None,
    threads: Annotated[int, typer.Option(help="onnxruntime intra-op threads (in-process).")] = 1,
) -> None:
    """Predict patches with a release, in-process or through a gateway; a bad file gets an error row.

    Exits 1 when any file could not be scored (every row is still written). Research use only.
    """
    import sys

    from training import predict as prediction

    with _user_errors():
        if (repository is None) == (url is None):
            raise ValueError("give exactly one of --repository (in-process) or --url (a gateway)")
        inputs = prediction.collect_inputs(paths)
        if inputs.skipped:
            console.print(prediction.skipped_message(inputs.skipped))
        if not inputs.files:
            raise FileNotFoundError(f"no image files in {', '.join(map(str, paths))}")
        if repository is not None:
            rows = prediction.predict_local(inputs.files, repository, operating_point, tta, threads)
        else:
            rows = prediction.predict_remote(inputs.files, str(url), operating_point, tta, api_key=api_key)
    if output is None:
        out.print(prediction.rows_table(rows))
    elif str(output) == "-":
        prediction.write_csv(rows, sys.stdout)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w", newline="") as f:
            prediction.write_csv(rows, f)
        console.print(f"{len(rows)} rows written to {output}")
    console.print(f"[yellow]{RESEARCH_USE}[/yellow]")
    failed = sum(row.error is not None for row in rows)
    if failed:
        console.print(f"[red]{failed} of {len(rows)} files could not be scored[/red] (see the error column)")
        raise typer.Exit(1)


def _show_release(manifest: ReleaseManifest) -> None:
    _show(
        views.summary(
            {m.name: m for m in manifest.members}, manifest.ensemble, f"release {manifest.release_id}"
        )
    )


@slide_app.command("predict")
def slide_predict(
    slides: Annotated[
        list[Path],
        typer.Argument(help="Slide files: pyramidal TIFF, SVS, NDPI and the others tiffslide reads."),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for every slide's files.")] = Path(
        "slides"
    ),
    repository: InProcessOption = None,
    url: Annotated[
        str | None, typer.Option("--url", help="Score through this gateway's tensor input instead.")
    ] = None,
    api_key: ApiKeyOption = None,
    operating_point: Annotated[
        str | None,
        typer.Option(
            "--operating-point", "-p", help="Regions and tumor area at this point; default balanced."
        ),
    ] = None,
    tta: Annotated[
        bool, typer.Option("--tta", help="Mean over the 8 dihedral views of every patch.")
    ] = False,
    stride: Annotated[
        int, typer.Option(help="Cell side in pixels at PCam's resolution; 32 follows PCam's label rule.")
    ] = 32,
    mpp: Annotated[
        float | None,
        typer.Option(
            "--mpp", help="The scan's microns per pixel, for a file that states none (or a wrong one)."
        ),
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="Patches per request (per in-process call).")] = 256,
    concurrency: Annotated[
        int,
        typer.Option(min=1, help="Requests (in-process calls) in flight at once, while the slide is read."),
    ] = 1,
    shard: Annotated[
        str | None,
        typer.Option(
            help="I/N: score only the slides at positions I, I+N, ... of the list (0-based; a Kubernetes "
            "Indexed Job gives each pod its I)."
        ),
    ] = None,
    rescore: Annotated[
        bool,
        typer.Option("--rescore", help="Score slides again whose outputs in --output are from this run."),
    ] = False,
    threads: Annotated[int, typer.Option(help="onnxruntime intra-op threads (in-process).")] = 1,
) -> None:
    """Score every tissue cell of each slide; write <slide>.heatmap.npz, .heatmap.png,
    .regions.geojson (QuPath), .cells.csv and .summary.json into --output.

    Reads at PCam's resolution (0.972 um/px) from the slide's own microns per pixel. An interrupted run
    resumes from <slide>.progress.npz without scoring finished cells again, and skips slides whose
    outputs are there from the same run (--rescore to score them again). Research use only.
    """
    from contextlib import nullcontext

    from training.slides.run import predict_slide, shard_of
    from training.slides.scorers import LocalScorer, remote_scorer
    from training.validate import operating_point_name

    with _user_errors():
        if (repository is None) == (url is None):
            raise ValueError("give exactly one of --repository (in-process) or --url (a gateway)")
        point = operating_point_name(operating_point or "balanced")
        scoring = (
            remote_scorer(url, api_key, point, tta, batch)
            if url is not None
            else nullcontext(LocalScorer(repository, point, tta, threads))  # type: ignore[arg-type]
        )
        with scoring as scorer:
            for slide in shard_of(slides, shard):
                summary = predict_slide(
                    slide, scorer, output, point, tta=tta, stride=stride, mpp=mpp, batch=batch,
                    concurrency=concurrency, rescore=rescore,
                )  # fmt: skip
                out.print(views.slide_summary(summary))


@slide_app.command("evaluate")
def slide_evaluate(
    results: Annotated[
        Path, typer.Argument(help="The --output directory of `pcam slide predict` (its *.heatmap.npz).")
    ],
    annotations: Annotated[
        Path,
        typer.Option(
            "--annotations",
            "-a",
            help="Directory of <slide>.geojson (QuPath) or <slide>.xml (Camelyon16) outlines; a slide "
            "without a file there has no tumor.",
        ),
    ],
    report: Annotated[
        Path | None, typer.Option("--report", help="Write the evaluation as JSON here too.")
    ] = None,
) -> None:
    """Score heatmaps against reference outlines: cell-level ROC AUC at the grid's resolution (a cell is
    tumor when any of its pixels is, PCam's rule) and Camelyon16's lesion-level FROC. Research use only."""
    from training.slides.evaluate import evaluate_slides

    with _user_errors():
        if not annotations.is_dir():
            raise ValueError(f"--annotations {annotations}: not a directory")
        heatmaps = sorted(results.glob("*.heatmap.npz"))
        if not heatmaps:
            raise ValueError(f"{results}: no *.heatmap.npz (the output of `pcam slide predict`)")
        evaluation = evaluate_slides(heatmaps, annotations)
    out.print(views.slide_evaluation(evaluation))
    if report is not None:
        report.write_text(evaluation.model_dump_json(indent=2) + "\n")


@slide_app.command("synthetic")
def slide_synthetic(
    path: Annotated[
        Path, typer.Argument(help="The slide to write (a pyramidal TIFF, e.g. slides/demo.tiff).")
    ],
    seed: Annotated[int, typer.Option(help="Draws the section, its stains and its tumors.")] = 0,
    size: Annotated[
        tuple[int, int], typer.Option(help="Height and width of the section in pixels at PCam's resolution.")
    ] = (1536, 1920),
) -> None:
    """Write a synthetic tissue section with two tumors as a pyramidal TIFF (at twice PCam's
    resolution, with its microns per pixel) and its tumor outlines beside it as <stem>.geojson: a slide
    to try `pcam slide predict` and `pcam slide evaluate` on. Synthetic: says nothing about PCam."""
    import json

    from training.slides.reader import PCAM_MPP
    from training.slides.synthetic import write_synthetic_slide

    with _user_errors():
        slide = write_synthetic_slide(path, size=size, seed=seed)
        outlines = path.with_suffix(".geojson")
        outlines.write_text(json.dumps(slide.annotations()) + "\n")
    out.print(f"{path} ({size[0]}x{size[1]} px at {PCAM_MPP} um/px, level 0 at "
              f"{slide.level0_mpp:.3f}); tumor outlines in {outlines}")  # fmt: skip


def main() -> None:
    """Console script entry point."""
    app()
