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
