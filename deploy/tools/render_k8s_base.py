"""Render the kustomize base (k8s/base/pcam.yaml) from the Helm chart: one source for both.

`make k8s-base` runs this; a test renders again and fails when the committed base has drifted.
"""

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "pcam"
BASE_VALUES = ROOT / "k8s" / "base" / "values.yaml"
BASE_MANIFEST = ROOT / "k8s" / "base" / "pcam.yaml"
RELEASE, NAMESPACE = "pcam", "pcam"  # names in the base: pcam-gateway, pcam-triton, ...
HEADER = (
    "# Generated from the Helm chart (helm/pcam) with k8s/base/values.yaml by `make k8s-base`.\n"
    "# Do not edit: change the chart or the values, then regenerate (a test checks they agree).\n"
)


def render(helm: str) -> str:
    """The base manifest text: the chart rendered with the base values, without the helm test pod,
    and without namespaces (each overlay sets its own)."""
    args = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--skip-tests"]
    done = subprocess.run(
        [*args, "--values", str(BASE_VALUES)], capture_output=True, text=True, check=False, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"helm template failed:\n{done.stderr}")
    objects = [item for item in yaml.safe_load_all(done.stdout) if item]
    for item in objects:
        item["metadata"].pop("namespace", None)
    return HEADER + yaml.safe_dump_all(objects, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--helm", default="helm", help="the helm binary")
    args = parser.parse_args(argv)
    BASE_MANIFEST.write_text(render(args.helm))
    return 0


if __name__ == "__main__":
    sys.exit(main())
