"""The Helm chart helm/pcam (docs/architecture.md#production-runtime), offline: lint, render, Kubernetes schemas, policies.

Each value set in helm/pcam/ci/ is rendered once per module; every check below reads those renders.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import click
import pytest
import typer.main
import yaml

from devstack.triton import opentelemetry_trace_settings
from pcam_core.contract import PATCH_BYTES
from services.common.settings import agreed_fields, field_set_by
from services.ensemble.settings import EnsembleSettings
from services.gateway.settings import GatewaySettings
from services.preprocess.settings import PreprocessSettings
from tests.http_server import local_server, serving, url_of
from tests.unit.deploy import k8s_policy
from tests.unit.deploy.conftest import ROOT, kubernetes_validate_output

CHART = ROOT / "helm" / "pcam"
VALUES = CHART / "ci"  # chart-testing convention: <name>-values.yaml, also examples for users
VALUE_SETS = (
    "default",
    "gpu-autoscaling-monitoring",
    "external-redis",
    "ensemble-beside-triton",
    "slide-job",
)
BESIDE = "ensemble-beside-triton"  # ensemble.besideTriton: the ensemble a container of every Triton pod
RELEASE, NAMESPACE = "t", "pcam"
KUBERNETES_VERSIONS = ("1.27.0", "1.37.0")  # the chart's kubeVersion floor and the newest bundled schemas
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
RULES = ROOT / "deploy" / "prometheus" / "pcam-rules.yml"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
SERVICES = ("gateway", "preprocess", "ensemble")
COMPONENTS = (*SERVICES, "triton")
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())
# The chart's default metrics scrapers: the only pods besides the gateway that reach the services.
SCRAPERS = DEFAULTS["networkPolicy"]["metrics"]["from"]
CONTAINER_PORTS = {"gateway": 8080, "preprocess": 8081, "ensemble": 8082}
SETTINGS = {"gateway": GatewaySettings, "preprocess": PreprocessSettings, "ensemble": EnsembleSettings}
CLI_COMMANDS = {"slides": ("slide", "predict")}
"""Components that run a `pcam` command: their PCAM_* variables are the command's options' variables."""

Obj = dict[str, Any]


def run_helm(helm: str, *args: str, values: dict | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["-f", "-"] if values is not None else []
    return subprocess.run(
        [helm, *args, *extra],
        input=None if values is None else yaml.safe_dump(values),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def template_args(name: str) -> list[str]:
    return [
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "-f",
        str(VALUES / f"{name}-values.yaml"),
    ]


def parse(manifests: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(manifests) if doc]


@pytest.fixture(scope="module")
def rendered(helm: str) -> Callable[[str], tuple[str, list[Obj]]]:
    """name -> (manifests, objects), each value set rendered once."""
    cache: dict[str, tuple[str, list[Obj]]] = {}

    def render(name: str) -> tuple[str, list[Obj]]:
        if name not in cache:
            done = run_helm(helm, *template_args(name))
            assert done.returncode == 0, done.stderr
            cache[name] = (done.stdout, parse(done.stdout))
        return cache[name]

    return render


def objects_of(rendered: Callable, name: str) -> list[Obj]:
    return rendered(name)[1]


def render_with(helm: str, values: dict, name: str = "default") -> list[Obj]:
    """The objects of value set `name` with `values` on top."""
    done = run_helm(helm, *template_args(name), values=values)
    assert done.returncode == 0, done.stderr
    return parse(done.stdout)


def render_failure(helm: str, values: dict, name: str = "default") -> str:
    """The error of a render that must fail."""
    done = run_helm(helm, *template_args(name), values=values)
    assert done.returncode != 0, "the render was expected to fail"
    return done.stderr


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def full(component: str) -> str:
    return f"{RELEASE}-pcam-{component}"


def deployment(objects: list[Obj], component: str) -> Obj:
    """The Deployment whose pods run `component`: its own, or Triton's for the ensemble beside Triton."""
    own = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == full(component)]
    if not own and component == "ensemble":
        return find(objects, "Deployment", full("triton"))
    assert len(own) == 1, f"Deployment/{full(component)}: {len(own)} found"
    return own[0]


def pod_spec(objects: list[Obj], component: str) -> Obj:
    return deployment(objects, component)["spec"]["template"]["spec"]


def container(objects: list[Obj], component: str) -> Obj:
    (match,) = [c for c in pod_spec(objects, component)["containers"] if c["name"] == component]
    return match


def config(objects: list[Obj], component: str) -> dict[str, str]:
    return find(objects, "ConfigMap", full(component))["data"]


def env_of(objects: list[Obj], component: str) -> dict[str, Any]:
    """A service's environment: its ConfigMap (envFrom) plus its env entries (value or valueFrom)."""
    env: dict[str, Any] = dict(config(objects, component))
    for entry in container(objects, component).get("env") or []:
        env[entry["name"]] = entry.get("value", entry.get("valueFrom"))
    return env


def mounts(spec_container: Obj) -> dict[str, Obj]:
    return {m["mountPath"]: m for m in spec_container.get("volumeMounts") or []}


# The chart itself


def test_chart_metadata_and_linked_sources() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "pcam"
    assert (chart["version"], chart["appVersion"], chart["kubeVersion"]) == ("0.1.0", "0.1.0", ">=1.27.0-0")
    for field in ("description", "keywords", "home", "sources"):
        assert chart[field], field
    # The rules and dashboards are links into deploy/, never copies.
    for link, target in (
        ("dashboards", "../../../deploy/grafana/dashboards"),
        ("prometheus", "../../../deploy/prometheus"),
    ):
        path = CHART / "files" / link
        assert path.is_symlink() and os.readlink(path) == target
    assert "files/prometheus/*.test.yml" in (CHART / ".helmignore").read_text().splitlines()
    json.loads((CHART / "values.schema.json").read_text())


@pytest.mark.parametrize("name", VALUE_SETS)
def test_helm_lint_strict_passes(helm: str, name: str) -> None:
    done = run_helm(
        helm,
        "lint",
        "--strict",
        str(CHART),
        "--namespace",
        NAMESPACE,
        "-f",
        str(VALUES / f"{name}-values.yaml"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_object_passes_the_kubernetes_schemas(
    kubernetes_validate: str, rendered: Callable, tmp_path: Path, name: str, version: str
) -> None:
    manifests, objects = rendered(name)
    output = kubernetes_validate_output(kubernetes_validate, manifests, tmp_path, version)
    # Only the Prometheus Operator kinds lack a bundled schema; they are checked structurally below.
    skipped = set(re.findall(r"Couldn't find schema for kind (\w+)", output))
    assert skipped == CRD_KINDS & {o["kind"] for o in objects}, output
    assert "ERROR" not in output, output


def test_the_crd_objects_are_well_formed(rendered: Callable) -> None:
    objects = objects_of(rendered, "gpu-autoscaling-monitoring")
    services = {o["metadata"]["name"]: o for o in k8s_policy.by_kind(objects, "Service")}
    monitors = k8s_policy.by_kind(objects, "ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {full(c) for c in COMPONENTS}
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        spec = monitor["spec"]
        assert set(spec) == {"selector", "namespaceSelector", "endpoints"}
        target = [
            s for s in services.values() if k8s_policy.selects(spec["selector"], s["metadata"]["labels"])
        ]
        assert [s["metadata"]["name"] for s in target] == [monitor["metadata"]["name"]]
        port_names = {p["name"] for p in target[0]["spec"]["ports"]}
        for endpoint in spec["endpoints"]:
            assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"
            assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "honorLabels"}
        # The services' own `service` label must survive the operator's target labels.
        is_triton = monitor["metadata"]["name"] == full("triton")
        assert spec["endpoints"][0].get("honorLabels", False) is (not is_triton)
        assert spec["endpoints"][0]["port"] == ("metrics" if is_triton else "http")
    (rule,) = k8s_policy.by_kind(objects, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and set(rule["spec"]) == {"groups"}
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for item in group["rules"]:
            assert ("record" in item) != ("alert" in item) and item["expr"]


# Policies over every value set


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_workload_passes_the_policies(rendered: Callable, name: str) -> None:
    objects = objects_of(rendered, name)
    assert k8s_policy.all_violations(objects) == []
    # The helm test pod and the init containers are among the checked pods.
    pods = {p.where: p for p in k8s_policy.pod_templates(objects)}
    assert f"Pod/{full('test')}-prediction" in pods
    if name == "external-redis":
        assert all(
            pods[f"Deployment/{full(c)}"].spec["initContainers"] for c in ("triton", "preprocess", "ensemble")
        )


@pytest.mark.parametrize("name", VALUE_SETS)
def test_network_policies_deny_by_default_and_open_only_the_platform_paths(
    rendered: Callable, name: str
) -> None:
    objects = objects_of(rendered, name)
    beside = name == BESIDE
    assert any(k8s_policy.is_default_deny(p) for p in k8s_policy.by_kind(objects, "NetworkPolicy"))
    assert k8s_policy.check_default_deny(objects) == []
    # API and /metrics share the port: only gateway and scraper
    for service in ("preprocess",) if beside else ("preprocess", "ensemble"):
        assert k8s_policy.check_ingress_only_from(objects, service, {"gateway"}, allowed_peers=SCRAPERS) == []
    if beside:  # the ensemble's port on the Triton pods; the ensemble calls Triton over the loopback
        assert (
            k8s_policy.check_ingress_only_from(objects, "triton", {"gateway"}, except_ports={8002, 8082})
            == []
        )
    else:
        assert k8s_policy.check_ingress_only_from(objects, "triton", {"ensemble"}, except_ports={8002}) == []
    triton_ports = {
        p["port"]
        for peer, ports in k8s_policy.ingress_peers(objects, pod_labels(objects, "triton"))
        if peer
        for p in ports
    }
    assert triton_ports == ({8082, 8002} if beside else {8001, 8002})
    gateway_egress = network_policy(objects, "gateway")["spec"]["egress"]
    egress_ports = {p["port"] for rule in gateway_egress for p in rule["ports"]}
    if name == "external-redis":
        assert not [
            p for p in k8s_policy.pod_templates(objects) if p.labels.get(k8s_policy.COMPONENT) == "redis"
        ]
        assert egress_ports == {8081, 8082, 6380}
        assert {"ipBlock": {"cidr": "10.20.0.0/16"}} in gateway_egress[-1]["to"]
    else:
        assert k8s_policy.check_ingress_only_from(objects, "redis", {"gateway"}) == []
        assert network_policy(objects, "redis")["spec"]["egress"] == []
        assert egress_ports == {8081, 8082, 6379} | (
            {4318} if name == "gpu-autoscaling-monitoring" else set()
        )


def pod_labels(objects: list[Obj], component: str) -> dict[str, str]:
    return find(objects, "Deployment", full(component))["spec"]["template"]["metadata"]["labels"]


def network_policy(objects: list[Obj], component: str) -> Obj:
    return find(objects, "NetworkPolicy", full(component))


# Reachability: the flows the platform needs pass both ends' policies; the ones it must not, do not.

_scraper = SCRAPERS[0]
PROMETHEUS = k8s_policy.Endpoint(
    "prometheus",
    _scraper["podSelector"]["matchLabels"],
    namespace=_scraper["namespaceSelector"]["matchLabels"],
)
KUBE_DNS = k8s_policy.Endpoint(
    "kube-dns", {"k8s-app": "kube-dns"}, namespace={"kubernetes.io/metadata.name": "kube-system"}
)
NODE_LOCAL_DNS = k8s_policy.Endpoint("node-local-dns", pod=False, ip="169.254.20.10")
OTHER_NAMESPACE_POD = k8s_policy.Endpoint(
    "a pod of another namespace", {"app": "other"}, namespace={"kubernetes.io/metadata.name": "other"}
)
NEIGHBOUR = k8s_policy.Endpoint("another pod of the release's namespace", {"app": "other"})
INTERNET = k8s_policy.Endpoint("an address outside the cluster", pod=False, ip="203.0.113.7")


def platform_flows(
    objects: list[Obj], dns: k8s_policy.Endpoint = KUBE_DNS
) -> tuple[list[k8s_policy.Flow], list[k8s_policy.Flow]]:
    """(required, forbidden) flows among the release's pods (chart renders and kustomize builds alike)."""
    flow = k8s_policy.Flow
    pods = k8s_policy.release_pods(objects)
    gateway, preprocess, triton = (pods[c] for c in ("gateway", "preprocess", "triton"))
    # The pods serving each service's port: the ensemble's are Triton's when it runs beside Triton, and
    # its calls to Triton then stay on the pod's loopback, which no NetworkPolicy sees.
    ensemble = pods.get("ensemble", triton)
    serving = {**pods, "ensemble": ensemble}
    required = [
        flow(gateway, preprocess, 8081),
        flow(gateway, ensemble, 8082),
        *([flow(ensemble, triton, 8001)] if ensemble is not triton else []),
        *(flow(PROMETHEUS, serving[c], port) for c, port in CONTAINER_PORTS.items()),
        flow(PROMETHEUS, triton, 8002),
        *(flow(pod, dns, 53, protocol) for pod in pods.values() for protocol in ("UDP", "TCP")),
    ]
    forbidden = [
        *(flow(gateway, triton, port) for port in (8000, 8001, 8002)),
        flow(preprocess, triton, 8001),
        flow(preprocess, ensemble, 8082),
        *(
            flow(source, serving[c], port)
            for source in (OTHER_NAMESPACE_POD, NEIGHBOUR)
            for c, port in CONTAINER_PORTS.items()
            if c != "gateway"
        ),
        *(flow(source, triton, 8001) for source in (OTHER_NAMESPACE_POD, NEIGHBOUR, PROMETHEUS)),
        *(flow(pod, INTERNET, 443) for pod in pods.values()),
    ]
    if "test" in pods:  # `helm test`
        required.append(flow(pods["test"], gateway, 8080))
        forbidden += [
            flow(pods["test"], serving[c], port) for c, port in CONTAINER_PORTS.items() if c != "gateway"
        ]
    if "redis" in pods:  # the built-in Redis: the gateway only
        redis = pods["redis"]
        required.append(flow(gateway, redis, 6379))
        forbidden += [
            flow(source, redis, 6379)
            for source in (
                *(p for c, p in pods.items() if c != "gateway"),
                PROMETHEUS,
                OTHER_NAMESPACE_POD,
                NEIGHBOUR,
            )
        ]
    return required, forbidden


@pytest.mark.parametrize("name", VALUE_SETS)
def test_network_policies_let_exactly_the_platform_flows_through(rendered: Callable, name: str) -> None:
    objects = objects_of(rendered, name)
    required, forbidden = platform_flows(objects)
    gateway = k8s_policy.release_pods(objects)["gateway"]
    if name == "external-redis":
        external_redis = k8s_policy.Endpoint("the external Redis", pod=False, ip="10.20.0.5")
        ingress_controller = k8s_policy.Endpoint(
            "ingress-nginx",
            {"app": "ingress-nginx"},
            namespace={"kubernetes.io/metadata.name": "ingress-nginx"},
        )
        required += [
            k8s_policy.Flow(gateway, external_redis, 6380),
            k8s_policy.Flow(ingress_controller, gateway, 8080),
        ]
        forbidden += [
            k8s_policy.Flow(gateway, external_redis, 6379),
            k8s_policy.Flow(OTHER_NAMESPACE_POD, gateway, 8080),
        ]
    else:  # no ingressFrom: clients anywhere
        required += [
            k8s_policy.Flow(OTHER_NAMESPACE_POD, gateway, 8080),
            k8s_policy.Flow(NEIGHBOUR, gateway, 8080),
        ]
    assert k8s_policy.check_flows(objects, required, forbidden) == []


def test_dns_egress_reaches_kube_dns_or_the_configured_peers(helm: str, rendered: Callable) -> None:
    (rule,) = find(objects_of(rendered, "default"), "NetworkPolicy", f"{RELEASE}-pcam-dns")["spec"]["egress"]
    assert (
        rule["to"]
        == DEFAULTS["networkPolicy"]["dns"]["to"]
        == [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ]
    )
    assert sorted((p["port"], p["protocol"]) for p in rule["ports"]) == [(53, "TCP"), (53, "UDP")]
    default = objects_of(rendered, "default")
    pods = k8s_policy.release_pods(default).values()
    assert not any(k8s_policy.reachable(default, k8s_policy.Flow(p, NODE_LOCAL_DNS, 53, "UDP")) for p in pods)
    # NodeLocal DNSCache: its link-local address beside kube-dns.
    node_local = render_with(
        helm, {"networkPolicy": {"dns": {"to": [*rule["to"], {"ipBlock": {"cidr": "169.254.20.10/32"}}]}}}
    )
    for dns in (KUBE_DNS, NODE_LOCAL_DNS):
        required, forbidden = platform_flows(node_local, dns=dns)
        assert k8s_policy.check_flows(node_local, required, forbidden) == []


# GPU, autoscaling, disruption budgets


def test_triton_asks_for_a_gpu_only_in_the_gpu_values(rendered: Callable) -> None:
    gpu, cpu = objects_of(rendered, "gpu-autoscaling-monitoring"), objects_of(rendered, "default")
    triton = container(gpu, "triton")
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert triton["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    spec = pod_spec(gpu, "triton")
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    probe = triton["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 600  # TensorRT engine builds
    assert mounts(triton)["/trt_engine_cache"]["name"] == "engine-cache"
    assert find(gpu, "PersistentVolumeClaim", full("engine-cache"))["spec"]["accessModes"] == [
        "ReadWriteMany"
    ]
    assert "nvidia.com/gpu" not in json.dumps(rendered("default")[1])
    assert container(cpu, "triton")["image"] == "ghcr.io/pcam-platform/pcam-triton-cpu:0.1.0"
    assert "/trt_engine_cache" not in mounts(container(cpu, "triton"))


SURGE = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
NO_SURGE = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}


def triton_strategy(objects: list[Obj]) -> Obj:
    return find(objects, "Deployment", full("triton"))["spec"]["strategy"]


def test_triton_rolls_out_without_a_spare_gpu_unless_told_otherwise(helm: str, rendered: Callable) -> None:
    assert DEFAULTS["triton"]["strategy"] == {}  # the chart picks
    assert triton_strategy(objects_of(rendered, "default")) == SURGE  # CPU: the new pod first
    assert triton_strategy(objects_of(rendered, "gpu-autoscaling-monitoring")) == NO_SURGE
    gpu = {"triton": {"gpu": {"enabled": True}}}
    assert triton_strategy(render_with(helm, gpu)) == NO_SURGE
    recreate = {"triton": {"gpu": {"enabled": True}, "strategy": {"type": "Recreate"}}}
    assert triton_strategy(render_with(helm, recreate)) == {"type": "Recreate"}
    assert triton_strategy(render_with(helm, {"triton": {"strategy": NO_SURGE}})) == NO_SURGE


def _rwo_cache(**triton: Any) -> dict:
    cache = {"type": "pvc", "pvc": {"accessModes": ["ReadWriteOnce"]}}
    return {"triton": {"gpu": {"enabled": True, "engineCache": cache}, **triton}}


@pytest.mark.parametrize(
    "triton",
    [
        {"replicaCount": 2},
        {"replicaCount": 1, "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3}},
    ],
    ids=["two replicas", "autoscaling to three"],
)
def test_a_read_write_once_engine_cache_refuses_several_triton_pods(helm: str, triton: dict) -> None:
    error = render_failure(helm, _rwo_cache(**triton))
    assert "triton.gpu.engineCache.pvc.accessModes" in error and "ReadWriteMany" in error


def test_a_read_write_once_engine_cache_serves_one_triton_pod(helm: str) -> None:
    objects = render_with(helm, _rwo_cache(replicaCount=1))
    assert find(objects, "PersistentVolumeClaim", full("engine-cache"))["spec"]["accessModes"] == [
        "ReadWriteOnce"
    ]
    assert triton_strategy(objects) == NO_SURGE  # never two pods on the claim, even during a rollout
    # The ReadWriteOnce check concerns the GPU engine cache only.
    render_with(helm, {"triton": {"replicaCount": 3}})


def test_hpas_and_pdbs_follow_replicas_and_autoscaling(rendered: Callable) -> None:
    gpu = objects_of(rendered, "gpu-autoscaling-monitoring")
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]: h for h in k8s_policy.by_kind(gpu, "HorizontalPodAutoscaler")
    }
    assert set(hpas) == {full(c) for c in COMPONENTS}
    assert all(h["apiVersion"] == "autoscaling/v2" for h in hpas.values())
    for service in SERVICES:
        (metric,) = hpas[full(service)]["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
        assert "replicas" not in find(gpu, "Deployment", full(service))["spec"]  # the HPA owns it
    (metric,) = hpas[full("triton")]["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "pcam_triton_queue_duration_us_per_request"
    assert hpas[full("gateway")]["spec"]["minReplicas"] == 3
    pdbs = {p["metadata"]["name"]: p["spec"] for p in k8s_policy.by_kind(gpu, "PodDisruptionBudget")}
    assert set(pdbs) == {full(c) for c in COMPONENTS}
    assert pdbs[full("triton")]["maxUnavailable"] == 1 and "minAvailable" not in pdbs[full("triton")]
    assert pdbs[full("gateway")]["minAvailable"] == 1
    for name, pdb in pdbs.items():
        assert k8s_policy.selects(pdb["selector"], pod_labels(gpu, name.removeprefix(f"{RELEASE}-pcam-")))

    default = objects_of(rendered, "default")
    assert k8s_policy.by_kind(default, "HorizontalPodAutoscaler") == []
    # Two replicas of each service get a budget; the single Triton does not (it could never be evicted).
    assert {p["metadata"]["name"] for p in k8s_policy.by_kind(default, "PodDisruptionBudget")} == {
        full(s) for s in SERVICES
    }
    assert find(default, "Deployment", full("triton"))["spec"]["replicas"] == 1


def test_services_can_also_scale_on_admission_saturation_and_take_their_limits(helm: str) -> None:
    saturation = {"enabled": True, "metricName": "pcam_admission_saturation", "targetAverageValue": "0.7"}
    objects = render_with(
        helm,
        {
            "gateway": {
                "autoscaling": {"enabled": True, "saturation": saturation},
                "maxPendingPatches": 128,
                "maxInFlightRequests": 300,
            },
            "ensemble": {"maxInFlightRequests": 16},
        },
    )
    (hpa,) = k8s_policy.by_kind(objects, "HorizontalPodAutoscaler")
    cpu, pods = hpa["spec"]["metrics"]
    assert cpu["resource"]["name"] == "cpu"
    assert pods["pods"]["metric"]["name"] == "pcam_admission_saturation"
    assert pods["pods"]["target"] == {"type": "AverageValue", "averageValue": "0.7"}
    gateway, ensemble = config(objects, "gateway"), config(objects, "ensemble")
    assert gateway["PCAM_GATEWAY_MAX_PENDING_PATCHES"] == "128"
    assert gateway["PCAM_GATEWAY_MAX_IN_FLIGHT_REQUESTS"] == "300"
    assert ensemble["PCAM_ENSEMBLE_MAX_IN_FLIGHT_REQUESTS"] == "16"
    assert "PCAM_PREPROCESS_MAX_IN_FLIGHT_REQUESTS" not in config(objects, "preprocess")  # its default


def pdb_names(objects: list[Obj]) -> set[str]:
    return {p["metadata"]["name"] for p in k8s_policy.by_kind(objects, "PodDisruptionBudget")}


def test_a_pdb_needs_more_than_one_pod_at_all_times(helm: str) -> None:
    """A minAvailable 1 budget over what may be a single pod blocks every node drain."""
    autoscaled_from_one = {"enabled": True, "minReplicas": 1, "maxReplicas": 5}
    objects = render_with(
        helm,
        {
            "gateway": {"replicaCount": 3, "autoscaling": autoscaled_from_one},  # replicaCount ignored
            "preprocess": {"replicaCount": 1, "autoscaling": {"enabled": True, "minReplicas": 2}},
            "ensemble": {"replicaCount": 1},
            "triton": {"replicaCount": 2},
        },
    )
    assert pdb_names(objects) == {full("preprocess"), full("triton")}


def test_pods_spread_over_zones_and_nodes(rendered: Callable) -> None:
    objects = objects_of(rendered, "default")
    for component in COMPONENTS:
        constraints = pod_spec(objects, component)["topologySpreadConstraints"]
        assert [c["topologyKey"] for c in constraints] == [
            "topology.kubernetes.io/zone",
            "kubernetes.io/hostname",
        ]
        assert all(c["whenUnsatisfiable"] == "ScheduleAnyway" for c in constraints)
        assert all(
            k8s_policy.selects(c["labelSelector"], pod_labels(objects, component)) for c in constraints
        )


# Monitoring


@pytest.mark.parametrize("name", VALUE_SETS)
def test_monitoring_objects_exist_only_when_enabled(rendered: Callable, name: str) -> None:
    objects = objects_of(rendered, name)
    enabled = name == "gpu-autoscaling-monitoring"
    dashboards = [
        c for c in k8s_policy.by_kind(objects, "ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]
    ]
    assert len(k8s_policy.by_kind(objects, "ServiceMonitor")) == (4 if enabled else 0)
    assert len(k8s_policy.by_kind(objects, "PrometheusRule")) == (1 if enabled else 0)
    assert len(dashboards) == (len(DASHBOARDS) if enabled else 0)


def test_the_prometheus_rule_is_deploy_prometheus_pcam_rules(rendered: Callable) -> None:
    (rule,) = k8s_policy.by_kind(objects_of(rendered, "gpu-autoscaling-monitoring"), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_each_dashboard_configmap_holds_its_file_exactly(rendered: Callable) -> None:
    objects = objects_of(rendered, "gpu-autoscaling-monitoring")
    by_file = {
        key: c
        for c in k8s_policy.by_kind(objects, "ConfigMap")
        for key in (c.get("data") or {})
        if key.endswith(".json")
    }
    assert sorted(by_file) == [p.name for p in DASHBOARDS]
    for path in DASHBOARDS:
        configmap = by_file[path.name]
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert configmap["metadata"]["namespace"] == "monitoring"
        assert configmap["metadata"]["annotations"] == {"grafana_folder": "PCam"}
        assert configmap["data"][path.name] == path.read_text()


# The ensemble beside Triton (ensemble.besideTriton)


def ensemble_settings(env: dict[str, Any]) -> EnsembleSettings:
    """The ensemble's settings as its container's environment makes them."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("PCAM_")]:
            patch.delenv(name)
        for name, value in env.items():
            if name.startswith("PCAM_"):
                patch.setenv(name, value)
        return EnsembleSettings()


def run_as_user(spec: Obj, spec_container: Obj) -> int:
    return (spec_container.get("securityContext") or {}).get(
        "runAsUser", spec["securityContext"]["runAsUser"]
    )


def test_the_ensemble_beside_triton_is_a_container_of_every_triton_pod(helm: str, rendered: Callable) -> None:
    objects = objects_of(rendered, BESIDE)
    spec = pod_spec(objects, "triton")
    assert [c["name"] for c in spec["containers"]] == ["triton", "ensemble"]
    sidecar, triton = container(objects, "ensemble"), container(objects, "triton")
    # Triton on the loopback, the patches in shared memory; every other setting as a standalone ensemble.
    grpc = next(p["containerPort"] for p in triton["ports"] if p["name"] == "grpc")
    env = env_of(objects, "ensemble")
    assert env["PCAM_ENSEMBLE_TRITON_GRPC_URL"] == f"127.0.0.1:{grpc}"
    assert env["PCAM_ENSEMBLE_TRITON_SHARED_MEMORY"] == "true"
    settings = ensemble_settings(env)
    assert settings.triton_shared_memory and settings.triton_shared_memory_slots == 16
    assert sidecar["envFrom"] == [{"configMapRef": {"name": full("ensemble")}}]
    # The standalone ensemble's container (image, env, probes, resources, security context, model
    # volume), but for its port's name (Triton's is `http`), its own /tmp and the pod's /dev/shm.
    standalone = container(
        render_with(helm, {"ensemble": {"besideTriton": {"enabled": False}}}, BESIDE), "ensemble"
    )
    expected = json.loads(json.dumps(standalone))
    expected["ports"][0]["name"] = "ensemble"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        expected[probe]["httpGet"]["port"] = "ensemble"
    tmp, *others = expected["volumeMounts"]
    expected["volumeMounts"] = [
        {**tmp, "name": "ensemble-tmp"},
        {"name": "dshm", "mountPath": "/dev/shm"},
        *others,
    ]
    assert sidecar == expected
    assert mounts(sidecar)["/models"] == mounts(triton)["/models"]  # release.json from Triton's repository
    names = [p["name"] for c in spec["containers"] for p in c["ports"]]
    numbers = [p["containerPort"] for c in spec["containers"] for p in c["ports"]]
    assert len(set(names)) == len(names) and len(set(numbers)) == len(numbers)  # one network namespace
    # Triton opens the regions the ensemble creates (mode 0600) only as the same user.
    assert (
        run_as_user(spec, sidecar)
        == run_as_user(spec, triton)
        == DEFAULTS["triton"]["podSecurityContext"]["runAsUser"]
    )
    # A change of the ensemble's settings rolls the Triton pods.
    annotations = deployment(objects, "triton")["spec"]["template"]["metadata"]["annotations"]
    changed = render_with(helm, {"ensemble": {"env": {"PCAM_ENSEMBLE_MIN_MEMBERS": "1"}}}, BESIDE)
    changed_annotations = deployment(changed, "triton")["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/ensemble-config"])
    assert changed_annotations["checksum/ensemble-config"] != annotations["checksum/ensemble-config"]


def test_the_ensemble_beside_triton_may_still_pass_its_patches_in_the_messages(helm: str) -> None:
    """ensemble.env wins over the mode's PCAM_ENSEMBLE_TRITON_SHARED_MEMORY (e.g. to compare both)."""
    done = run_helm(
        helm,
        *template_args(BESIDE),
        values={"ensemble": {"env": {"PCAM_ENSEMBLE_TRITON_SHARED_MEMORY": "false"}}},
    )
    assert done.returncode == 0, done.stderr
    configmap = next(
        d
        for d in done.stdout.split("\n---\n")
        if f"name: {full('ensemble')}\n" in d and "kind: ConfigMap" in d
    )
    assert configmap.count("PCAM_ENSEMBLE_TRITON_SHARED_MEMORY:") == 1
    assert not ensemble_settings(env_of(parse(done.stdout), "ensemble")).triton_shared_memory


def test_the_ensemble_beside_triton_has_no_deployment_autoscaler_or_budget_of_its_own(
    helm: str, rendered: Callable
) -> None:
    objects = objects_of(rendered, BESIDE)
    for kind in ("Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"):
        names = {o["metadata"]["name"] for o in k8s_policy.by_kind(objects, kind)}
        assert full("ensemble") not in names, kind
    # Triton's (two pods at least) cover it; off, the ensemble has its own again.
    assert find(objects, "HorizontalPodAutoscaler", full("triton"))
    assert find(objects, "PodDisruptionBudget", full("triton"))
    assert {p.labels[k8s_policy.COMPONENT] for p in k8s_policy.pod_templates(objects)} == {
        "gateway",
        "preprocess",
        "triton",
        "redis",
        "test",
    }
    standalone = render_with(helm, {"ensemble": {"besideTriton": {"enabled": False}}}, BESIDE)
    assert find(standalone, "PodDisruptionBudget", full("ensemble"))
    assert [c["name"] for c in pod_spec(standalone, "triton")["containers"]] == ["triton"]
    # An ensemble autoscaler cannot apply: the ensemble scales with Triton.
    error = render_failure(helm, {"ensemble": {"autoscaling": {"enabled": True}}}, BESIDE)
    assert "ensemble.autoscaling.enabled" in error and "triton.autoscaling" in error


def test_the_ensemble_and_triton_share_one_memory_backed_dev_shm(rendered: Callable) -> None:
    objects = objects_of(rendered, BESIDE)
    spec = pod_spec(objects, "triton")
    (dshm,) = [v for v in spec["volumes"] if v["name"] == "dshm"]
    for component in ("triton", "ensemble"):
        assert mounts(container(objects, component))["/dev/shm"]["name"] == "dshm"
    # triton.shmSize (Triton's python backend) plus ensemble.besideTriton.shmSize, which holds the slots.
    assert dshm["emptyDir"] == {"medium": "Memory", "sizeLimit": "576Mi"}
    settings = ensemble_settings(env_of(objects, "ensemble"))
    slots = settings.triton_shared_memory_slots * settings.triton_shared_memory_slot_patches * PATCH_BYTES
    assert slots <= 64 * 2**20
    assert [
        v for v in pod_spec(objects_of(rendered, "default"), "triton")["volumes"] if v["name"] == "dshm"
    ] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": DEFAULTS["triton"]["shmSize"]}}]


@pytest.mark.parametrize(
    ("triton_size", "ensemble_size", "size_limit"),
    [("1Gi", "100M", 2**30 + 10**8), ("1.5Gi", 2**26, "1600Mi"), (2**29, "0.5Gi", "1024Mi")],
)
def test_the_shared_dev_shm_adds_up_both_sizes(
    helm: str, triton_size: str | int, ensemble_size: str | int, size_limit: str | int
) -> None:
    values = {"triton": {"shmSize": triton_size}, "ensemble": {"besideTriton": {"shmSize": ensemble_size}}}
    (dshm,) = [
        v for v in pod_spec(render_with(helm, values, BESIDE), "triton")["volumes"] if v["name"] == "dshm"
    ]
    assert dshm["emptyDir"]["sizeLimit"] == size_limit
    error = render_failure(helm, {"triton": {"shmSize": "100m"}}, BESIDE)
    assert "triton.shmSize" in error and "100m" in error


def test_the_ensemble_service_selects_the_triton_pods(helm: str, rendered: Callable) -> None:
    objects = objects_of(rendered, BESIDE)
    service = find(objects, "Service", full("ensemble"))
    selected = [
        p
        for p in k8s_policy.pod_templates(objects)
        if k8s_policy.selects({"matchLabels": service["spec"]["selector"]}, p.labels)
    ]
    assert [p.where for p in selected] == [f"Deployment/{full('triton')}"]
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "ensemble" and port["port"] == DEFAULTS["ensemble"]["service"]["port"]
    assert {p["name"]: p["containerPort"] for p in container(objects, "ensemble")["ports"]} == {
        "ensemble": 8082
    }
    # The gateway keeps its address; the Triton Service keeps Triton's ports only.
    assert env_of(objects, "gateway")["PCAM_GATEWAY_ENSEMBLE_URL"] == f"http://{full('ensemble')}:8082"
    assert [p["name"] for p in find(objects, "Service", full("triton"))["spec"]["ports"]] == [
        "http",
        "grpc",
        "metrics",
    ]
    # Prometheus scrapes the ensemble's /metrics through its Service, now on the Triton pods.
    monitored = render_with(helm, {"monitoring": {"serviceMonitor": {"enabled": True}}}, BESIDE)
    monitor = find(monitored, "ServiceMonitor", full("ensemble"))
    (endpoint,) = monitor["spec"]["endpoints"]
    assert k8s_policy.selects(
        monitor["spec"]["selector"], find(monitored, "Service", full("ensemble"))["metadata"]["labels"]
    )
    assert endpoint["port"] == port["name"] and endpoint["honorLabels"] is True


def test_network_policies_let_the_gateway_reach_the_ensemble_on_the_triton_pods(rendered: Callable) -> None:
    objects = objects_of(rendered, BESIDE)
    pods = k8s_policy.release_pods(objects)
    gateway, preprocess, triton = pods["gateway"], pods["preprocess"], pods["triton"]
    flow = k8s_policy.Flow
    for allowed in (
        flow(gateway, triton, 8082),
        flow(PROMETHEUS, triton, 8082),
        flow(PROMETHEUS, triton, 8002),
    ):
        assert k8s_policy.reachable(objects, allowed), allowed
    for denied in (
        *(flow(gateway, triton, port) for port in (8000, 8001, 8002)),
        flow(preprocess, triton, 8082),
        flow(NEIGHBOUR, triton, 8082),
        flow(OTHER_NAMESPACE_POD, triton, 8001),
    ):
        assert not k8s_policy.reachable(objects, denied), denied
    # Nothing reaches Triton's gRPC port from outside the pod: the ensemble calls it over the loopback.
    ingress = k8s_policy.ingress_peers(objects, pod_labels(objects, "triton"))
    assert not [peer for peer, ports in ingress if 8001 in {p["port"] for p in ports}]


def test_notes_tell_that_the_ensemble_runs_beside_triton(helm: str, tmp_path: Path) -> None:
    notes = render_notes(helm, tmp_path, VALUES / f"{BESIDE}-values.yaml")
    assert "The ensemble runs in every Triton pod (ensemble.besideTriton)" in notes and "(576Mi)" in notes
    assert "ensemble.besideTriton" not in render_notes(helm, tmp_path / "default")


# Values schema


@pytest.mark.parametrize(
    "values",
    [
        {"gateway": {"replicaCount": "two"}},
        {"gateway": {"replicas": 2}},
        {"gatway": {"replicaCount": 2}},
        {"triton": {"gpu": {"enabeld": True}}},
        {"modelRepository": {"source": "s3"}},
        {"gateway": {"image": {"tag": "latest"}}},
        {"redis": {"image": {"tag": "latest"}}},
        {"gateway": {"resources": {"limits": None}}},  # null deletes the default
        {"preprocess": {"resources": {"limits": {"memory": None}}}},
        {"networkPolicy": {"enabled": "yes"}},
        {"networkPolicy": {"dns": {"podSelector": {}}}},  # the peers go in networkPolicy.dns.to
        {"networkPolicy": {"dns": {"to": []}}},  # no DNS at all
        {"ensemble": {"besideTriton": True}},  # the mode is ensemble.besideTriton.enabled
        {"ensemble": {"besideTriton": {"enabled": "yes"}}},
        {"ensemble": {"besideTriton": {"shmSize": "64MB"}}},
    ],
    ids=lambda v: json.dumps(v, separators=(",", ":")),
)
def test_the_schema_rejects_bad_values(helm: str, values: dict) -> None:
    done = run_helm(helm, "template", RELEASE, str(CHART), values=values)
    assert done.returncode != 0
    assert "don't meet the specifications of the schema" in done.stderr, done.stderr


def test_helm_lint_fails_on_a_typo(helm: str) -> None:
    done = run_helm(helm, "lint", "--strict", str(CHART), values={"gateway": {"replicaCount": "two"}})
    assert done.returncode != 0 and "replicaCount" in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"modelRepository": {"source": "objectStorage"}}, "modelRepository.objectStorage.uri is required"),
        ({"redis": {"enabled": False}}, "externalRedis.host is required"),
    ],
)
def test_missing_required_settings_fail_the_render(helm: str, values: dict, message: str) -> None:
    done = run_helm(helm, "template", RELEASE, str(CHART), values=values)
    assert done.returncode != 0 and message in done.stderr, done.stderr


# Secrets


def assert_gateway_reads_redis_password_file(objects: list[Obj], secret: str, key: str) -> None:
    """The gateway gets the Redis password as a file of the Secret (PCAM_GATEWAY_REDIS_PASSWORD_FILE:
    a trailing newline is stripped), never as an environment variable."""
    env = env_of(objects, "gateway")
    assert "PCAM_GATEWAY_REDIS_PASSWORD" not in env
    path = Path(env["PCAM_GATEWAY_REDIS_PASSWORD_FILE"])
    mount = mounts(container(objects, "gateway"))[str(path.parent)]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod_spec(objects, "gateway")["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == secret
    assert volume["secret"]["items"] == [{"key": key, "path": path.name}]


def test_the_generated_redis_password_stays_in_its_secret(rendered: Callable) -> None:
    manifests, objects = rendered("default")
    secret = find(objects, "Secret", full("redis"))
    password = base64.b64decode(secret["data"]["redis-password"]).decode()
    assert len(password) == 32
    others = [o for o in objects if o is not secret]
    assert password not in json.dumps(others)
    assert_gateway_reads_redis_password_file(objects, full("redis"), "redis-password")
    assert env_of(objects, "gateway")["PCAM_GATEWAY_REDIS_URL"] == f"redis://{full('redis')}:6379/0"
    redis = container(objects, "redis")
    assert {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in redis["env"]} == {
        "REDIS_PASSWORD": full("redis")
    }
    # Never on redis-server's command line: it is written to a config file by a shell builtin.
    assert "requirepass" not in " ".join(redis["command"]) and "--requirepass" not in redis["args"][0]
    assert '"$password" > /config/redis.conf' in redis["args"][0]
    for flag in ('--save ""', "--appendonly no", "--maxmemory 192mb", "--maxmemory-policy allkeys-lru"):
        assert flag in redis["args"][0]
    # The pods restart when the chart's Secret changes.
    annotations = find(objects, "Deployment", full("gateway"))["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/secret"])


@pytest.mark.parametrize("secret_value", ["s3cret", "s3cret\n", "s3cret\r\n"])
def test_redis_and_the_gateway_agree_on_a_password_with_a_trailing_newline(
    rendered: Callable, tmp_path: Path, secret_value: str
) -> None:
    """A Secret made with `kubectl create secret --from-file` ends with a newline: Redis's startup
    script and readiness probe drop it, as the gateway does reading the Secret as a file."""
    objects = objects_of(rendered, "default")
    redis = container(objects, "redis")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # Stand-ins: redis-server does nothing, redis-cli answers PONG only to the right password.
    (bin_dir / "redis-server").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "redis-cli").write_text('#!/bin/sh\n[ "$REDISCLI_AUTH" = s3cret ] && echo PONG\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    config = tmp_path / "redis.conf"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "REDIS_PASSWORD": secret_value}
    start = redis["args"][0].replace("/config/redis.conf", str(config))
    done = subprocess.run(["/bin/sh", "-c", start], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert config.read_text() == 'requirepass "s3cret"\n'
    assert config.stat().st_mode & 0o077 == 0  # umask 077
    probe = redis["readinessProbe"]["exec"]["command"]
    assert subprocess.run(probe, env=env, capture_output=True, timeout=30).returncode == 0
    wrong = {**env, "REDIS_PASSWORD": "other\n"}
    assert subprocess.run(probe, env=wrong, capture_output=True, timeout=30).returncode != 0
    # The gateway reads the same Secret key as a file.
    secret_file = tmp_path / "redis-password"
    secret_file.write_text(secret_value, newline="")
    assert GatewaySettings(redis_password_file=secret_file).redis_auth_password() == "s3cret"


def test_external_redis_password_comes_from_the_existing_secret(rendered: Callable) -> None:
    objects = objects_of(rendered, "external-redis")
    assert k8s_policy.by_kind(objects, "Secret") == []
    env = env_of(objects, "gateway")
    assert env["PCAM_GATEWAY_REDIS_URL"] == "rediss://redis.cache.example.internal:6380/2"
    assert_gateway_reads_redis_password_file(objects, "pcam-redis-credentials", "password")


def test_redis_without_auth_mounts_no_password(helm: str) -> None:
    objects = render_with(helm, {"redis": {"auth": {"enabled": False}}})
    assert k8s_policy.by_kind(objects, "Secret") == []
    assert not [k for k in env_of(objects, "gateway") if k.startswith("PCAM_GATEWAY_REDIS_PASSWORD")]
    assert "/etc/pcam/redis" not in mounts(container(objects, "gateway"))
    assert "env" not in container(objects, "redis")
    assert "REDISCLI_AUTH" not in container(objects, "redis")["readinessProbe"]["exec"]["command"][-1]


def test_api_keys_file_is_mounted_read_only_and_configured(rendered: Callable) -> None:
    objects = objects_of(rendered, "external-redis")
    env = env_of(objects, "gateway")
    assert env["PCAM_GATEWAY_API_KEY_FILE"] == "/etc/pcam/api-keys/keys.txt"
    assert env["PCAM_GATEWAY_RATE_LIMIT_PER_MINUTE"] == "600"
    mount = mounts(container(objects, "gateway"))["/etc/pcam/api-keys"]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod_spec(objects, "gateway")["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "pcam-api-keys"
    assert volume["secret"]["items"] == [{"key": "keys.txt", "path": "keys.txt"}]
    assert "PCAM_GATEWAY_API_KEY_FILE" not in env_of(objects_of(rendered, "default"), "gateway")


# Wiring of the services


@pytest.mark.parametrize("name", VALUE_SETS)
def test_services_are_wired_to_each_other_and_the_model_repository(rendered: Callable, name: str) -> None:
    objects = objects_of(rendered, name)
    services = {s["metadata"]["name"]: s for s in k8s_policy.by_kind(objects, "Service")}
    for component, port in (("gateway", 8080), ("preprocess", 8081), ("ensemble", 8082)):
        env = env_of(objects, component)
        prefix = f"PCAM_{component.upper()}_"
        assert (env[f"{prefix}HOST"], env[f"{prefix}PORT"]) == ("0.0.0.0", str(port))
        assert env["NUMBA_CACHE_DIR"] == "/tmp/numba" and "/tmp" in mounts(container(objects, component))
        # Beside Triton, `http` is Triton's port: port names are unique per pod.
        port_name = "ensemble" if name == BESIDE and component == "ensemble" else "http"
        assert container(objects, component)["ports"] == [
            {"name": port_name, "containerPort": port, "protocol": "TCP"}
        ]
        assert services[full(component)]["spec"]["ports"][0]["port"] == port
        assert services[full(component)]["spec"]["ports"][0]["targetPort"] == port_name
        probes = container(objects, component)
        assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
        # The gateway stays in its Service while a dependency is down (it answers 503 + Retry-After
        # itself); preprocess and ensemble report their own readiness.
        readiness = "/healthz" if component == "gateway" else "/readyz"
        assert probes["readinessProbe"]["httpGet"]["path"] == readiness
    gateway = env_of(objects, "gateway")
    assert gateway["PCAM_GATEWAY_PREPROCESS_URL"] == f"http://{full('preprocess')}:8081"
    assert gateway["PCAM_GATEWAY_ENSEMBLE_URL"] == f"http://{full('ensemble')}:8082"
    triton_host = "127.0.0.1" if name == BESIDE else full("triton")
    assert env_of(objects, "ensemble")["PCAM_ENSEMBLE_TRITON_GRPC_URL"] == f"{triton_host}:8001"
    for component in ("preprocess", "ensemble"):
        assert env_of(objects, component)["PCAM_MODEL_REPOSITORY"] == "/models"
    for component in ("triton", "preprocess", "ensemble"):
        assert mounts(container(objects, component))["/models"]["readOnly"] is True
    triton = container(objects, "triton")
    assert triton["command"] == ["tritonserver"]
    # The cpu image's python backend lives there; the NGC image keeps its own default.
    gpu = name in ("gpu-autoscaling-monitoring", BESIDE)
    assert ("--backend-directory=/opt/tritonserver/backends" in triton["args"]) is not gpu
    assert not gpu or not [a for a in triton["args"] if a.startswith("--backend-directory")]
    for arg in (
        "--model-repository=/models",
        "--model-control-mode=poll",
        "--repository-poll-secs=15",
        "--strict-readiness=true",
        "--exit-on-error=false",
        "--http-port=8000",
        "--grpc-port=8001",
        "--metrics-port=8002",
    ):
        assert arg in triton["args"]
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


def test_a_service_port_moves_only_the_service(helm: str) -> None:
    """A process without capabilities cannot bind port 80: the pods keep listening on their own ports."""
    objects = render_with(
        helm, {"gateway": {"service": {"port": 80}}, "preprocess": {"service": {"port": 9081}}}
    )
    services = {s["metadata"]["name"]: s["spec"]["ports"] for s in k8s_policy.by_kind(objects, "Service")}
    assert services[full("gateway")] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    assert services[full("preprocess")][0]["port"] == 9081
    for component, port in CONTAINER_PORTS.items():
        assert services[full(component)][0]["targetPort"] == "http"
        assert container(objects, component)["ports"] == [
            {"name": "http", "containerPort": port, "protocol": "TCP"}
        ]
        assert env_of(objects, component)[f"PCAM_{component.upper()}_PORT"] == str(port)
        (rule, *_) = network_policy(objects, component)["spec"]["ingress"]
        assert [p["port"] for p in rule["ports"]] == [port]
    # Clients address the Services' ports; NetworkPolicies see the pods' ports.
    assert env_of(objects, "gateway")["PCAM_GATEWAY_PREPROCESS_URL"] == f"http://{full('preprocess')}:9081"
    test_pod = find(objects, "Pod", f"{full('test')}-prediction")["spec"]["containers"][0]
    assert {"name": "GATEWAY_URL", "value": f"http://{full('gateway')}:80"} in test_pod["env"]
    required, forbidden = platform_flows(objects)
    assert k8s_policy.check_flows(objects, required, forbidden) == []


def cli_variables(*command: str) -> set[str]:
    """The environment variables a `pcam` command's options read."""
    from training.cli import app

    found = typer.main.get_command(app)
    for name in command:
        found = found.get_command(click.Context(found), name)
    return {p.envvar for p in found.params if isinstance(p.envvar, str)}


def settings_env_violations(objects: list[Obj]) -> list[str]:
    """Every PCAM_* variable a container gets (env and envFrom ConfigMaps) sets a field of its own
    service's settings class, as PCAM_<SERVICE>_<FIELD> or, for a field services must agree on,
    PCAM_<FIELD> (extra="ignore" would swallow a misspelt one); no name is given twice and no field by
    two names (one would silently win)."""
    configmaps = {
        c["metadata"]["name"]: c.get("data") or {} for c in k8s_policy.by_kind(objects, "ConfigMap")
    }
    violations = []
    for pod in k8s_policy.pod_templates(objects):
        for where, spec_container, _ in k8s_policy.containers(pod):
            # A service's container is named after it, in its own pods or (the ensemble) Triton's.
            component = spec_container.get("name", "")
            if component not in SETTINGS:
                component = pod.labels.get(k8s_policy.COMPONENT, "")
            settings, prefix = SETTINGS.get(component), f"PCAM_{component.upper()}_"
            env = [e["name"] for e in spec_container.get("env") or []]
            from_maps = [
                key
                for source in spec_container.get("envFrom") or []
                if "configMapRef" in source
                for key in configmaps[source["configMapRef"]["name"]]
            ]
            names = env + from_maps
            violations += [
                f"{where}: {n} set twice" for n in sorted({n for n in names if names.count(n) > 1})
            ]
            if component in CLI_COMMANDS:
                known = cli_variables(*CLI_COMMANDS[component])
                violations += [
                    f"{where}: {n} is no option of `pcam {' '.join(CLI_COMMANDS[component])}`"
                    for n in names if n.startswith("PCAM_") and n not in known
                ]  # fmt: skip
                continue
            fields: dict[str, str] = {}
            for name in names:
                if not name.startswith("PCAM_"):
                    continue
                field = field_set_by(settings, name) if settings else None
                if field is None and (settings is None or not name.startswith(prefix)):
                    violations.append(f"{where}: {name} is no setting of {component!r}")
                elif field is None:
                    violations.append(f"{where}: {name} is no field of {settings.__name__}")
                elif field in fields and fields[field] != name:
                    violations.append(f"{where}: {name} and {fields[field]} both set {field}")
                else:
                    fields[field] = name
    return violations


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_pcam_variable_is_a_setting_of_its_service(rendered: Callable, name: str) -> None:
    objects = objects_of(rendered, name)
    assert settings_env_violations(objects) == []
    for service in SERVICES:  # the check saw the services' variables
        assert f"PCAM_{service.upper()}_PORT" in env_of(objects, service)


def test_the_settings_check_finds_misspelt_and_repeated_variables(helm: str) -> None:
    objects = render_with(
        helm,
        {
            "gateway": {"env": {"PCAM_GATEWAY_RATELIMIT": "5"}},
            "ensemble": {"env": {"PCAM_GATEWAY_PORT": "1"}},
        },
    )
    violations = settings_env_violations(objects)
    assert any("PCAM_GATEWAY_RATELIMIT is no field of GatewaySettings" in v for v in violations)
    assert any("PCAM_GATEWAY_PORT is no setting of 'ensemble'" in v for v in violations)
    gateway = find(objects, "Deployment", full("gateway"))
    gateway["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "X", "value": "1"}] * 2
    assert any("X set twice" in v for v in settings_env_violations(objects))
    objects = render_with(
        helm,
        {
            "shared": {"maxImages": 8},
            "gateway": {"env": {"PCAM_GATEWAY_MAX_IMAGES": "9"}},
            "ensemble": {"env": {"PCAM_MAX_IMAGES": "9"}},
        },
    )
    violations = settings_env_violations(objects)
    assert any("PCAM_GATEWAY_MAX_IMAGES and PCAM_MAX_IMAGES both set max_images" in v for v in violations)
    assert any("PCAM_MAX_IMAGES is no setting of 'ensemble'" in v for v in violations)


def test_shared_settings_are_set_once_and_every_service_that_has_them_agrees(helm: str) -> None:
    """`shared` values reach each service whose settings have the field, read by the settings class."""
    base = "https://docs.lab.example/pcam/problems/"
    values = {
        "maxImageBytes": 2 << 20, "maxImages": 64, "releasePollSeconds": 2.5, "maxExplainImages": 4,
        "problemTypeBase": base,
    }  # fmt: skip
    objects = render_with(helm, {"shared": values})
    expected = {
        "max_image_bytes": 2 << 20, "max_images": 64, "release_poll_s": 2.5, "max_explain_images": 4,
        "problem_type_base": base,
    }  # fmt: skip
    for service, settings_class in SETTINGS.items():
        env = {k: v for k, v in env_of(objects, service).items() if k.startswith("PCAM_")}
        with pytest.MonkeyPatch.context() as patch:
            for name in [n for n in os.environ if n.startswith("PCAM_")]:
                patch.delenv(name)
            for name, value in env.items():
                patch.setenv(name, value)
            settings = settings_class()
        shared = agreed_fields(settings_class)
        assert shared, service
        for field in shared:
            assert getattr(settings, field) == expected.get(field, Path("/models")), (service, field)
    assert settings_env_violations(objects) == []


def test_the_model_repository_from_object_storage(rendered: Callable) -> None:
    objects = objects_of(rendered, "external-redis")
    assert k8s_policy.by_kind(objects, "PersistentVolumeClaim") == []
    for component, manifest_only in (("triton", False), ("preprocess", True), ("ensemble", True)):
        spec = pod_spec(objects, component)
        (init,) = spec["initContainers"]
        assert init["image"] == "docker.io/amazon/aws-cli:2.23.7"
        assert init["args"][:4] == ["s3", "sync", "s3://pcam-releases/2024-06-01", "/models"]
        assert "https://minio.storage.example.internal" in init["args"]
        assert (init["args"][-4:] == ["--exclude", "*", "--include", "release.json"]) is manifest_only
        assert init["envFrom"] == [{"secretRef": {"name": "pcam-s3-credentials"}}]
        assert mounts(init)["/models"].get("readOnly") is not True
        (volume,) = [v for v in spec["volumes"] if v["name"] == "models"]
        assert "emptyDir" in volume
        egress = network_policy(objects, component)["spec"]["egress"]
        assert {"ipBlock": {"cidr": "10.30.0.0/16"}} in egress[-1]["to"] and egress[-1]["ports"][0][
            "port"
        ] == 9000


def test_the_model_repository_from_a_pvc(rendered: Callable) -> None:
    default, gpu = objects_of(rendered, "default"), objects_of(rendered, "gpu-autoscaling-monitoring")
    claim = find(default, "PersistentVolumeClaim", full("models"))
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for component in ("triton", "preprocess", "ensemble"):
        assert "initContainers" not in pod_spec(default, component)
        (volume,) = [v for v in pod_spec(gpu, component)["volumes"] if v["name"] == "models"]
        assert volume["persistentVolumeClaim"] == {"claimName": "pcam-models", "readOnly": True}
        assert mounts(container(gpu, component))["/models"]["subPath"] == "releases/2024-06-01"
    assert [
        o for o in k8s_policy.by_kind(gpu, "PersistentVolumeClaim") if o["metadata"]["name"] == full("models")
    ] == []


def test_tracing_sets_the_otel_environment_and_triton_trace_config(rendered: Callable) -> None:
    on, off = objects_of(rendered, "gpu-autoscaling-monitoring"), objects_of(rendered, "default")
    for service in SERVICES:
        env = env_of(on, service)
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4318"
        assert env["OTEL_SERVICE_NAME"] == f"pcam-{service}"
        assert (env["OTEL_TRACES_SAMPLER"], env["OTEL_TRACES_SAMPLER_ARG"]) == (
            "parentbased_traceidratio",
            "0.2",
        )
        assert not [k for k in env_of(off, service) if k.startswith("OTEL_")]
    args = container(on, "triton")["args"]
    configs = [args[i + 1] for i, arg in enumerate(args) if arg == "--trace-config"]
    # Triton ignores the caller's sampled flag: rate 1 puts its span in every sampled trace.
    assert DEFAULTS["tracing"]["tritonRate"] == 1
    assert configs == opentelemetry_trace_settings(
        "http://otel-collector.observability:4318/v1/traces", rate=1
    )
    assert "--trace-config" not in container(off, "triton")["args"]


def test_a_config_change_restarts_only_its_service(helm: str, rendered: Callable) -> None:
    def checksums(objects: list[Obj]) -> dict[str, str]:
        return {
            c: find(objects, "Deployment", full(c))["spec"]["template"]["metadata"]["annotations"][
                "checksum/config"
            ]
            for c in SERVICES
        }

    done = run_helm(helm, *template_args("default"), values={"gateway": {"rateLimitPerMinute": 5}})
    assert done.returncode == 0, done.stderr
    before, after = checksums(objects_of(rendered, "default")), checksums(parse(done.stdout))
    assert before["gateway"] != after["gateway"]
    assert (before["preprocess"], before["ensemble"]) == (after["preprocess"], after["ensemble"])


@pytest.mark.parametrize("name", VALUE_SETS)
def test_images_are_pinned_to_the_app_version(rendered: Callable, name: str) -> None:
    objects = objects_of(rendered, name)
    for service in SERVICES:
        assert container(objects, service)["image"] == f"ghcr.io/pcam-platform/pcam-{service}:0.1.0"


INTERNAL_PATHS = ("/metrics", "/readyz", "/healthz")


def routes(path: Obj, request_path: str) -> bool:
    """Whether an Ingress path (Prefix: whole path elements; Exact) sends `request_path` to its backend."""
    if path["pathType"] == "Exact":
        return request_path == path["path"]
    prefix = path["path"].rstrip("/")
    return request_path == prefix or request_path.startswith(prefix + "/")


def ingress_paths(objects: list[Obj]) -> list[Obj]:
    return [
        p
        for i in k8s_policy.by_kind(objects, "Ingress")
        for r in i["spec"]["rules"]
        for p in r["http"]["paths"]
    ]


def test_the_ingress_exposes_only_the_gateways_api(helm: str, rendered: Callable) -> None:
    (ingress,) = k8s_policy.by_kind(objects_of(rendered, "external-redis"), "Ingress")
    backends = {
        p["backend"]["service"]["name"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]
    }
    assert backends == {full("gateway")}
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert k8s_policy.by_kind(objects_of(rendered, "default"), "Ingress") == []
    # By default only /v1; the example value set adds the docs page and the schema it loads.
    default = ingress_paths(render_with(helm, {"ingress": {"enabled": True}}))
    assert [(p["path"], p["pathType"]) for p in default] == [("/v1", "Prefix")]
    example = ingress_paths(objects_of(rendered, "external-redis"))
    for request_path in ("/v1/predict", "/docs", "/openapi.json"):
        assert any(routes(p, request_path) for p in example), request_path
    for paths in (default, example):
        for request_path in INTERNAL_PATHS:
            assert not any(routes(p, request_path) for p in paths), request_path
    assert routes({"path": "/", "pathType": "Prefix"}, "/metrics")  # what the old default published
    assert not routes({"path": "/v1", "pathType": "Prefix"}, "/v10")


def render_notes(helm: str, tmp_path: Path, *values_files: Path, values: dict | None = None) -> str:
    """NOTES.txt as `helm install` prints it (`--dry-run` needs a cluster here: rendered through `tpl`
    in a copy of the chart)."""
    chart = tmp_path / "pcam"
    shutil.copytree(CHART, chart, symlinks=False)
    shutil.copy(CHART / "templates" / "NOTES.txt", chart / "files" / "NOTES.txt")
    (chart / "templates" / "notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data: {notes: {{ tpl (.Files.Get "files/NOTES.txt") . | toJson }}}\n'
    )
    files = [arg for path in values_files for arg in ("-f", str(path))]
    done = run_helm(
        helm, "template", RELEASE, str(chart), "-s", "templates/notes.yaml", *files, values=values
    )
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)["data"]["notes"]


def test_notes_carry_the_research_use_line_and_the_gpu_reminder(helm: str, tmp_path: Path) -> None:
    notes = render_notes(helm, tmp_path, VALUES / "gpu-autoscaling-monitoring-values.yaml")
    assert "RESEARCH USE ONLY" in notes
    assert "MUST be the `gpu` target" in notes and "pcam_triton_queue_duration_us_per_request" in notes
    assert f"port-forward svc/{full('gateway')} 8080:8080" in notes
    assert "WARNING" not in notes  # the ServiceMonitors are on


def test_notes_warn_when_triton_autoscales_on_a_metric_nobody_scrapes(helm: str, tmp_path: Path) -> None:
    values = {
        "triton": {"autoscaling": {"enabled": True}},
        "gateway": {"service": {"port": 80}},
        "redis": {"auth": {"existingSecret": "pcam-redis-auth"}},
    }
    notes = render_notes(helm, tmp_path, values=values)
    assert "WARNING: monitoring.serviceMonitor.enabled is false" in notes
    assert f"port-forward svc/{full('gateway')} 8080:80" in notes  # a local port that needs no root
    assert "Argo CD" not in notes  # the generated-password reminder only when the chart generates one
    assert "Argo CD" in render_notes(helm, tmp_path / "default")


# The helm test pod


class _StubGateway(BaseHTTPRequestHandler):
    predict_status = 200

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._answer(200 if self.path == "/readyz" else 404, b"{}")

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        assert self.headers["Content-Type"] == "image/png" and body.startswith(b"\x89PNG")
        self._answer(self.predict_status, b'{"probability": 0.5}')

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("status", "keys_on", "passes"), [(200, "false", True), (503, "false", False), (401, "true", True)]
)
def test_the_helm_test_script_fails_on_a_non_200_prediction(
    rendered: Callable, status: int, keys_on: str, passes: bool
) -> None:
    pod = find(objects_of(rendered, "default"), "Pod", f"{full('test')}-prediction")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (test,) = pod["spec"]["containers"]
    assert test["image"] == "ghcr.io/pcam-platform/pcam-gateway:0.1.0" and test["command"] == ["python", "-c"]
    assert 'url + "/readyz"' in test["args"][0]  # the whole chain, though the gateway's probe is /healthz
    handler = type("Handler", (_StubGateway,), {"predict_status": status})
    with serving(local_server(handler)) as server:
        done = subprocess.run(
            [sys.executable, "-c", test["args"][0]],
            env={**os.environ, "GATEWAY_URL": url_of(server), "API_KEYS_ON": keys_on},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    assert (done.returncode == 0) is passes, done.stdout + done.stderr


# The policy checks themselves find violations


def _bad_deployment() -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "bad"},
        "spec": {
            "template": {
                "metadata": {"labels": {k8s_policy.COMPONENT: "redis"}},
                "spec": {
                    "securityContext": {"runAsUser": 0},
                    "initContainers": [{"name": "init", "image": "busybox"}],
                    "containers": [
                        {
                            "name": "app",
                            "image": "redis:latest",
                            "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}, "privileged": True},
                            "resources": {"requests": {"cpu": "1"}},
                            "env": [
                                {"name": "REDIS_PASSWORD", "value": "hunter2"},
                                {"name": "URL", "value": "redis://:hunter2@redis:6379/0"},
                            ],
                        }
                    ],
                },
            }
        },
    }


def test_the_policy_checks_find_violations() -> None:
    objects = [_bad_deployment()]
    security = "\n".join(k8s_policy.check_pod_security(objects))
    for expected in (
        "automountServiceAccountToken is not false",
        "initContainer init: not forced to run as non-root",
        "container app: readOnlyRootFilesystem is not true",
        "container app: allowPrivilegeEscalation is not false",
        "container app: privileged",
        "container app: capabilities do not drop ALL",
        "adds capabilities ['NET_ADMIN']",
        "seccompProfile is None",
    ):
        assert expected in security
    resources = k8s_policy.check_resources(objects)
    assert "Deployment/bad container app: no memory request" in resources
    assert "Deployment/bad container app: no cpu limit" in resources
    assert "Deployment/bad initContainer init: no cpu request" in resources
    assert k8s_policy.check_probes(objects) == [
        "Deployment/bad container app: no livenessProbe",
        "Deployment/bad container app: no readinessProbe",
    ]
    assert len(k8s_policy.check_images(objects)) == 2  # untagged busybox, redis:latest
    assert (
        k8s_policy.image_tag("registry:5000/a/b") is None
        and k8s_policy.image_tag("a@sha256:00") == "sha256:00"
    )
    assert (
        k8s_policy.check_images([{**_pod("ok"), "spec": {"containers": [{"image": "registry:5000/a:1.2"}]}}])
        == []
    )
    secrets = k8s_policy.check_no_plaintext_secrets(objects)
    assert any("REDIS_PASSWORD has a plain value" in v for v in secrets)
    assert any("URL holds a URL with a password" in v for v in secrets)
    leaky = {
        "kind": "ConfigMap",
        "metadata": {"name": "c"},
        "data": {"PCAM_GATEWAY_REDIS_URL": "redis://u:p@h:6379/0"},
    }
    assert k8s_policy.check_no_plaintext_secrets([leaky]) == [
        "ConfigMap/c: PCAM_GATEWAY_REDIS_URL looks like a secret"
    ]
    # A *_FILE variable naming where a secret is mounted is fine; one holding the secret is not.
    files = {
        "kind": "ConfigMap",
        "metadata": {"name": "f"},
        "data": {
            "PCAM_GATEWAY_REDIS_PASSWORD_FILE": "/etc/pcam/redis/redis-password",
            "TOKEN_FILE": "hunter2",
        },
    }
    assert k8s_policy.check_no_plaintext_secrets([files]) == ["ConfigMap/f: TOKEN_FILE looks like a secret"]
    # A run-to-completion pod (helm test) needs no probes; its containers are still checked otherwise.
    test_pod = {
        **_pod("test"),
        "spec": {"restartPolicy": "Never", "containers": [{"name": "t", "image": "x:1"}]},
    }
    assert k8s_policy.check_probes([test_pod]) == []
    assert k8s_policy.check_resources([test_pod]) and k8s_policy.check_pod_security([test_pod])


def _pod(name: str, component: str = "x") -> Obj:
    return {"kind": "Pod", "metadata": {"name": name, "labels": {k8s_policy.COMPONENT: component}}}


def _policy(
    name: str, selector: dict, ingress: list | None = None, types: tuple = ("Ingress", "Egress")
) -> Obj:
    spec: Obj = {"podSelector": {"matchLabels": selector}, "policyTypes": list(types)}
    if ingress is not None:
        spec["ingress"] = ingress
    return {"kind": "NetworkPolicy", "metadata": {"name": name}, "spec": spec}


def test_the_network_policy_checks_find_violations() -> None:
    redis = {**_pod("redis", "redis"), "spec": {"containers": []}}
    deny = _policy("deny", {})
    from_gateway = [
        {
            "from": [{"podSelector": {"matchLabels": {k8s_policy.COMPONENT: "gateway"}}}],
            "ports": [{"port": 6379}],
        }
    ]
    assert (
        k8s_policy.check_ingress_only_from(
            [redis, deny, _policy("r", {k8s_policy.COMPONENT: "redis"}, from_gateway)], "redis", {"gateway"}
        )
        == []
    )
    # No default deny at all.
    assert k8s_policy.check_default_deny([redis]) == ["Pod/redis: no default-deny NetworkPolicy selects it"]
    assert k8s_policy.check_ingress_only_from([redis], "redis", {"gateway"}) == [
        "Pod/redis: no default-deny NetworkPolicy selects it"
    ]
    # An ingress-only "deny" is not a default deny.
    assert k8s_policy.check_default_deny([redis, _policy("half", {}, types=("Ingress",))])
    # Redis open to everyone, to another namespace, to another component.
    for rule, expected in (
        ({"ports": [{"port": 6379}]}, "ingress from anywhere"),
        ({"from": [{"namespaceSelector": {}}]}, "ingress from {'namespaceSelector'"),
        ({"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}, "ingress from {'ipBlock'"),
        (
            {"from": [{"podSelector": {"matchLabels": {k8s_policy.COMPONENT: "preprocess"}}}]},
            "ingress from pods",
        ),
    ):
        open_redis = _policy("open", {k8s_policy.COMPONENT: "redis"}, [rule])
        (violation,) = k8s_policy.check_ingress_only_from([redis, deny, open_redis], "redis", {"gateway"})
        assert expected in violation
    assert k8s_policy.check_ingress_only_from([deny], "redis", {"gateway"}) == ["no pod of component 'redis'"]
    # Metrics ports may be excepted, but only when every port of the rule is one.
    scrape = _policy("scrape", {}, [{"from": [{"namespaceSelector": {}}], "ports": [{"port": 8002}]}])
    assert (
        k8s_policy.check_ingress_only_from([redis, deny, scrape], "redis", {"gateway"}, except_ports={8002})
        == []
    )
    assert k8s_policy.check_ingress_only_from([redis, deny, scrape], "redis", {"gateway"})


def test_the_reachability_evaluator_denies_what_either_end_does_not_allow() -> None:
    def pod(component: str) -> Obj:
        return {
            **_pod(component, component),
            "spec": {"containers": [{"ports": [{"name": "api", "containerPort": 6379}]}]},
        }

    def selector(component: str) -> Obj:
        return {"podSelector": {"matchLabels": {k8s_policy.COMPONENT: component}}}

    def policy(component: str, ingress: list | None = None, egress: list | None = None) -> Obj:
        spec = {"podSelector": selector(component)["podSelector"], "policyTypes": ["Ingress", "Egress"]}
        return {
            "kind": "NetworkPolicy",
            "metadata": {"name": component},
            "spec": {**spec, "ingress": ingress or [], "egress": egress or []},
        }

    pods = [pod("gateway"), pod("preprocess"), pod("redis")]
    endpoints = k8s_policy.release_pods(pods)
    gateway, preprocess, redis = (endpoints[c] for c in ("gateway", "preprocess", "redis"))
    to_redis = k8s_policy.Flow(gateway, redis, 6379)
    intruder = k8s_policy.Flow(preprocess, redis, 6379)
    gateway_out = policy("gateway", egress=[{"to": [selector("redis")], "ports": [{"port": 6379}]}])
    redis_in = policy("redis", ingress=[{"from": [selector("gateway")], "ports": [{"port": 6379}]}])
    deny = _policy("deny", {})

    # No policy: everything passes, so the forbidden flow is reported.
    assert k8s_policy.check_flows(pods, [to_redis], [intruder]) == [
        "preprocess -> redis:6379/TCP: allowed, but must be denied"
    ]
    # Default deny: the required flow is reported.
    assert k8s_policy.check_flows([*pods, deny], [to_redis], [intruder]) == [
        "gateway -> redis:6379/TCP: denied, but the platform needs it"
    ]
    # One end alone is not enough; both ends are.
    assert not k8s_policy.reachable([*pods, deny, gateway_out], to_redis)
    assert not k8s_policy.reachable([*pods, deny, redis_in], to_redis)
    assert k8s_policy.check_flows([*pods, deny, gateway_out, redis_in], [to_redis], [intruder]) == []
    # Another port, another protocol; a named port resolves to the destination's container port.
    assert not k8s_policy.reachable(
        [*pods, deny, gateway_out, redis_in], k8s_policy.Flow(gateway, redis, 6380)
    )
    assert not k8s_policy.reachable([*pods, gateway_out], k8s_policy.Flow(gateway, redis, 6379, "UDP"))
    named = policy("gateway", egress=[{"to": [selector("redis")], "ports": [{"port": "api"}]}])
    assert k8s_policy.reachable([*pods, named], to_redis)
    # A namespaceSelector peer is another namespace: never a pod of the policies' own namespace.
    from_namespaces = policy("redis", ingress=[{"from": [{"namespaceSelector": {}}]}])
    assert not k8s_policy.reachable([*pods, from_namespaces], intruder)
    assert k8s_policy.reachable([*pods, from_namespaces], k8s_policy.Flow(PROMETHEUS, redis, 6379))
    assert not k8s_policy.reachable([*pods, from_namespaces], k8s_policy.Flow(INTERNET, redis, 6379))
    # ipBlock peers reach addresses (with exceptions), not pods selected by labels.
    block = {"ipBlock": {"cidr": "169.254.0.0/16", "except": ["169.254.99.0/24"]}}
    dns_out = policy("gateway", egress=[{"to": [block], "ports": [{"port": 53, "protocol": "UDP"}]}])
    assert k8s_policy.reachable([*pods, dns_out], k8s_policy.Flow(gateway, NODE_LOCAL_DNS, 53, "UDP"))
    elsewhere = k8s_policy.Endpoint("excepted", pod=False, ip="169.254.99.1")
    assert not k8s_policy.reachable([*pods, dns_out], k8s_policy.Flow(gateway, elsewhere, 53, "UDP"))
    assert not k8s_policy.reachable([*pods, dns_out], k8s_policy.Flow(gateway, KUBE_DNS, 53, "UDP"))
    # An ingress-only policy leaves egress open.
    ingress_only = {**redis_in, "spec": {**redis_in["spec"], "policyTypes": ["Ingress"]}}
    assert k8s_policy.reachable([*pods, ingress_only], k8s_policy.Flow(redis, INTERNET, 443))
    # Redis opened to every peer, and the intruder's egress open: the table catches it.
    opened = policy("redis", ingress=[{"ports": [{"port": 6379}]}])
    anywhere_out = policy("preprocess", egress=[{}])
    assert k8s_policy.check_flows(
        [*pods, deny, gateway_out, opened, anywhere_out], [to_redis], [intruder]
    ) == ["preprocess -> redis:6379/TCP: allowed, but must be denied"]
