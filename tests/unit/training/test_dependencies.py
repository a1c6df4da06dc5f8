import subprocess
import sys

WEB_STACK = ("fastapi", "starlette", "uvicorn", "tritonclient", "redis", "httpx")


def test_training_imports_no_web_stack() -> None:
    """The training image installs only the `train` extra: the pipeline must not need the services' deps."""
    code = (
        "import sys, training.cli, training.pipeline, training.calibrate, training.stain;"
        f"print(','.join(m for m in {WEB_STACK!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""


def test_in_process_scoring_imports_no_torch() -> None:
    """`pcam predict -r` and `pcam slide predict -r` run exported graphs in onnxruntime: torch (about 5 s
    to import on 2 cores) stays out of their start."""
    code = (
        "import sys, training.predict, training.graphs, training.slides.run, training.slides.scorers;"
        "print(','.join(m for m in ('torch', 'timm') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""
