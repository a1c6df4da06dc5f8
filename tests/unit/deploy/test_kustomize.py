"""The kustomize manifests (k8s/): a base rendered from the Helm chart, overlays cpu-dev and gpu-prod,
built with `kubectl kustomize` and checked offline like the chart's renders."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.tools.render_k8s_base import BASE_MANIFEST, render
from tests.unit.deploy import k8s_policy
from tests.unit.deploy.conftest import ROOT, kubernetes_validate_output
from tests.unit.deploy.test_helm_chart import SCRAPERS, platform_flows, settings_env_violations
from training.config import TritonConfig

OVERLAYS = ("cpu-dev", "gpu-prod")
NAMESPACES = {"cpu-dev": "pcam-dev", "gpu-prod": "pcam"}
KUBERNETES_VERSION = "1.37.0"
GPU = "nvidia.com/gpu"
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def built(kubectl: str) -> Callable[[str], tuple[str, list[Obj]]]:
    """overlay -> (manifests, objects), each overlay built once."""
    cache: dict[str, tuple[str, list[Obj]]] = {}

    def build(overlay: str) -> tuple[str, list[Obj]]:
        if overlay not in cache:
            done = subprocess.run(
                [kubectl, "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            cache[overlay] = (done.stdout, [o for o in yaml.safe_load_all(done.stdout) if o])
        return cache[overlay]

    return build


def triton(objects: list[Obj]) -> Obj:
    (deployment,) = [
        o for o in k8s_policy.by_kind(objects, "Deployment") if o["metadata"]["name"] == "pcam-triton"
    ]
    return deployment


def test_the_base_is_the_current_rendering_of_the_chart(helm: str) -> None:
    assert BASE_MANIFEST.read_text() == render(helm), "k8s/base/pcam.yaml is stale: run `make k8s-base`"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_passes_the_kubernetes_schemas(
    kubernetes_validate: str, built: Callable, tmp_path: Path, overlay: str
) -> None:
    kubernetes_validate_output(kubernetes_validate, built(overlay)[0], tmp_path, KUBERNETES_VERSION)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_meet_the_security_and_resource_policies(built: Callable, overlay: str) -> None:
    objects = built(overlay)[1]
    assert k8s_policy.all_violations(objects) == []
    assert k8s_policy.check_default_deny(objects) == []
    assert k8s_policy.check_ingress_only_from(objects, "redis", {"gateway"}) == []
    for service in ("preprocess", "ensemble"):
        assert k8s_policy.check_ingress_only_from(objects, service, {"gateway"}, allowed_peers=SCRAPERS) == []
    assert k8s_policy.check_ingress_only_from(objects, "triton", {"ensemble"}, except_ports={8002}) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_let_exactly_the_platform_flows_through(built: Callable, overlay: str) -> None:
    objects = built(overlay)[1]
    required, forbidden = platform_flows(objects)
    assert k8s_policy.check_flows(objects, required, forbidden) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pcam_variable_is_a_setting_of_its_service(built: Callable, overlay: str) -> None:
    assert settings_env_violations(built(overlay)[1]) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_namespaced_object_lands_in_the_overlays_namespace(built: Callable, overlay: str) -> None:
    objects = built(overlay)[1]
    assert {o["metadata"].get("namespace") for o in objects} == {NAMESPACES[overlay]}
    assert all(o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kustomize" for o in objects)


def test_only_gpu_prod_puts_triton_on_a_gpu_with_the_ngc_image_and_an_engine_cache(built: Callable) -> None:
    dev, prod = triton(built("cpu-dev")[1]), triton(built("gpu-prod")[1])
    assert GPU not in built("cpu-dev")[0]
    assert (
        dev["spec"]["template"]["spec"]["containers"][0]["image"]
        .split("/")[-1]
        .startswith("pcam-triton-cpu:")
    )
    pod = prod["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert container["resources"]["limits"][GPU] == 1 == container["resources"]["requests"][GPU]
    assert pod["nodeSelector"] == {f"{GPU}.present": "true"}
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["engine-cache"] == TritonConfig().trt_engine_cache_path  # where config.pbtxt points
    assert not mounts["engine-cache"].startswith(mounts["models"])  # never inside the model repository
    claims = {
        o["metadata"]["name"] for o in k8s_policy.by_kind(built("gpu-prod")[1], "PersistentVolumeClaim")
    }
    (volume,) = [v for v in pod["volumes"] if v["name"] == "engine-cache"]
    assert volume["persistentVolumeClaim"]["claimName"] in claims


def test_gpu_prod_autoscales_existing_deployments_and_cpu_dev_has_no_blocking_pdbs(built: Callable) -> None:
    prod = built("gpu-prod")[1]
    deployments = {o["metadata"]["name"] for o in k8s_policy.by_kind(prod, "Deployment")}
    hpas = k8s_policy.by_kind(prod, "HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas} == {
        "pcam-gateway",
        "pcam-preprocess",
        "pcam-ensemble",
    }
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas} <= deployments
    assert all(h["apiVersion"] == "autoscaling/v2" for h in hpas)
    assert len(k8s_policy.by_kind(prod, "PodDisruptionBudget")) == 3
    # The HPAs own the counts: no `replicas` for `kubectl apply` to reset (nor in the kustomization).
    replicas = {
        o["metadata"]["name"]: o["spec"].get("replicas") for o in k8s_policy.by_kind(prod, "Deployment")
    }
    assert replicas == {
        "pcam-gateway": None,
        "pcam-preprocess": None,
        "pcam-ensemble": None,
        "pcam-triton": 1,
        "pcam-redis": 1,
    }
    kustomization = yaml.safe_load(
        (ROOT / "k8s" / "overlays" / "gpu-prod" / "kustomization.yaml").read_text()
    )
    autoscaled = {h["spec"]["scaleTargetRef"]["name"] for h in hpas}
    assert not [r for r in kustomization.get("replicas") or [] if r["name"] in autoscaled]
    dev = built("cpu-dev")[1]
    assert k8s_policy.by_kind(dev, "PodDisruptionBudget") == []
    assert {o["spec"]["replicas"] for o in k8s_policy.by_kind(dev, "Deployment")} == {1}


def claims(objects: list[Obj]) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o["spec"] for o in k8s_policy.by_kind(objects, "PersistentVolumeClaim")}


def test_the_model_claim_is_read_write_once_on_dev_clusters_and_shared_in_prod(built: Callable) -> None:
    # kind's and minikube's provisioners (local-path, hostpath) refuse ReadWriteMany.
    assert claims(built("cpu-dev")[1])["pcam-models"]["accessModes"] == ["ReadWriteOnce"]
    prod = claims(built("gpu-prod")[1])
    assert prod["pcam-models"]["accessModes"] == ["ReadWriteMany"]  # pods on several nodes
    # The ReadWriteOnce engine cache holds one Triton, which rolls out without a second pod.
    assert prod["pcam-engine-cache"]["accessModes"] == ["ReadWriteOnce"]
    spec = triton(built("gpu-prod")[1])["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


README = ROOT / "k8s" / "README.md"


def test_the_readme_loads_a_model_repository_onto_the_claim_and_keeps_the_steps(built: Callable) -> None:
    text = README.read_text()
    # Referenced by the base values for the Redis Secret step; names what the base expects.
    assert "k8s/README.md" in (ROOT / "k8s" / "base" / "values.yaml").read_text()
    secret = yaml.safe_load((ROOT / "k8s" / "base" / "values.yaml").read_text())["redis"]["auth"][
        "existingSecret"
    ]
    assert f"create secret generic {secret}" in text and "make k8s-base" in text
    for overlay in OVERLAYS:
        assert f"k8s/overlays/{overlay}" in text
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    (loader,) = [b for b in blocks if b.get("kind") == "Pod"]
    assert k8s_policy.all_violations([loader]) == []
    (volume,) = loader["spec"]["volumes"]
    (mount,) = loader["spec"]["containers"][0]["volumeMounts"]
    assert volume["persistentVolumeClaim"] == {"claimName": "pcam-models"}  # read-write
    assert mount.get("readOnly") is not True and mount["mountPath"] == "/models"
    for overlay in OVERLAYS:
        assert "pcam-models" in claims(built(overlay)[1])
    # The copy goes through `kubectl exec` into that mount.
    assert "kubectl -n pcam-dev exec -i pcam-models-loader -- tar -xf - -C /models" in text
