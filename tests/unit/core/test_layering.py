"""The core stands alone: no web framework, torch, Triton client or Redis, and no platform package."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[3]
HEAVY = ("fastapi", "starlette", "uvicorn", "torch", "tritonclient", "redis", "pydantic_settings")
PLATFORM = ("services", "training", "pcam_client", "devstack")


def test_importing_the_whole_core_imports_no_framework() -> None:
    modules = sorted(p.stem for p in (ROOT / "pcam_core").glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module('pcam_core.' + m)\n"
        f"print(','.join(m for m in {HEAVY + PLATFORM!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert loaded.stdout.strip() == ""
    assert len(modules) >= 10  # contract, release, rule, tta, explain, wire, schemas, problems, errors, ...


def test_the_core_names_no_platform_package_even_lazily() -> None:
    for path in (ROOT / "pcam_core").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in PLATFORM + HEAVY, f"{path.name} imports {name}"


def test_services_never_import_each_other() -> None:
    services = ("gateway", "preprocess", "ensemble")
    for service in services:
        for path in (ROOT / "services" / service).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("services."):
                    other = node.module.split(".")[1]
                    assert other in (service, "common"), (
                        f"services/{service}/{path.name} imports {node.module}"
                    )
