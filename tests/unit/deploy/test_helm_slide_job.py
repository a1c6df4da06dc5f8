"""The chart's whole-slide Job (slideJob, helm/pcam/templates/slides/job.yaml), offline: `pcam slide predict`
in an Indexed Job, pod I of N scoring its share of the slides through the release's gateway.

Rendered from helm/pcam/ci/slide-job-values.yaml (and values on top), checked like the chart's other
value sets in test_helm_chart.py: lint, Kubernetes schemas, the workload policies and the network flows.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import typer.main
import yaml

from pcam_core.release import OPERATING_POINT_ALIASES, OPERATING_POINTS
from tests.unit.deploy import k8s_policy
from tests.unit.deploy.conftest import kubernetes_validate_output
from tests.unit.deploy.test_helm_chart import (
    CHART,
    DEFAULTS,
    INTERNET,
    KUBE_DNS,
    KUBERNETES_VERSIONS,
    NEIGHBOUR,
    OTHER_NAMESPACE_POD,
    PROMETHEUS,
    RELEASE,
    VALUES,
    find,
    full,
    parse,
    platform_flows,
    render_failure,
    render_with,
    run_helm,
    settings_env_violations,
    template_args,
)
from training.cli import app
from training.slides.run import shard_of

SLIDE_JOB = "slide-job"  # helm/pcam/ci/slide-job-values.yaml
CI_VALUES = yaml.safe_load((VALUES / f"{SLIDE_JOB}-values.yaml").read_text())["slideJob"]
SHARD_INDEX = "batch.kubernetes.io/job-completion-index"
GATEWAY_PORT = 8080  # the gateway pods' port, which NetworkPolicies see
INGRESS_NGINX = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
# A slide job of its own on top of the default values (every key the schema needs when enabled).
ON = {"slideJob": {"enabled": True, "slides": ["a.svs", "b/c.tiff"], "volume": {"existingClaim": "scans"}}}

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def objects(helm: str) -> list[Obj]:
    """The objects of the CI value set with the Job on."""
    done = run_helm(helm, *template_args(SLIDE_JOB))
    assert done.returncode == 0, done.stderr
    return parse(done.stdout)


def on(**slide_job: Any) -> dict:
    """Values turning the Job on (ON) with these slideJob keys replaced."""
    return {"slideJob": {**ON["slideJob"], **slide_job}}


def the_job(objects: list[Obj]) -> Obj:
    (job,) = k8s_policy.by_kind(objects, "Job")
    return job


def pod_spec(objects: list[Obj]) -> Obj:
    return the_job(objects)["spec"]["template"]["spec"]


def the_container(objects: list[Obj]) -> Obj:
    (container,) = pod_spec(objects)["containers"]
    return container


def env(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container.get("env") or []}


def mounts(container: Obj) -> dict[str, Obj]:
    return {m["mountPath"]: m for m in container["volumeMounts"]}


def volumes(objects: list[Obj]) -> dict[str, Obj]:
    return {v["name"]: v for v in pod_spec(objects)["volumes"]}


def option(args: list[str], name: str) -> str:
    """The value following an option in an argument list (the option given once)."""
    assert args.count(name) == 1, (name, args)
    return args[args.index(name) + 1]


def expand(argument: str, variables: dict[str, str]) -> str:
    """Kubernetes' expansion of $(NAME) in a container's args ($$ is a literal $)."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: variables.get(m[1], m[0]) if m[1] else "$", argument
    )


# Off by default


def test_the_job_is_off_by_default(helm: str) -> None:
    assert DEFAULTS["slideJob"]["enabled"] is False
    for values in ({}, {"networkPolicy": {"gateway": {"ingressFrom": INGRESS_NGINX}}}):
        default = render_with(helm, values)
        assert k8s_policy.by_kind(default, "Job") == []
        assert [o for o in default if o["metadata"]["name"].startswith(full("slides"))] == []
        # Nor is any pod of it admitted by the gateway.
        assert "slides" not in json.dumps(find(default, "NetworkPolicy", full("gateway")))


# Lint, the Kubernetes schemas, the policies and the platform's flows: test_helm_chart.py's VALUE_SETS
# include slide-job.


def test_backoff_limit_per_index_is_for_newer_clusters_only(
    helm: str, kubernetes_validate: str, tmp_path: Path
) -> None:
    """backoffLimitPerIndex (beta in 1.29, GA in 1.33) is not in the chart's 1.27 floor: off by default,
    and refused by the render on an older cluster."""
    assert DEFAULTS["slideJob"]["backoffLimitPerIndex"] is None
    values = on(backoffLimitPerIndex=2, maxFailedIndexes=0, slides=["a.svs", "b.svs"])
    done = run_helm(helm, *template_args("default"), values=values)
    assert done.returncode == 0, done.stderr
    spec = the_job(parse(done.stdout))["spec"]
    assert (spec["backoffLimitPerIndex"], spec["maxFailedIndexes"]) == (2, 0)
    assert "backoffLimit" not in spec  # the per-index limit replaces the Job's
    kubernetes_validate_output(kubernetes_validate, done.stdout, tmp_path, KUBERNETES_VERSIONS[-1])
    old = subprocess.run(
        [kubernetes_validate, "--strict", "-k", "1.27.0", "--quiet", str(tmp_path / "manifests.yaml")],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert old.returncode != 0 and "backoffLimitPerIndex" in old.stdout + old.stderr
    older = run_helm(helm, *template_args("default"), "--kube-version", "1.28.0", values=values)
    assert older.returncode != 0 and "Kubernetes >= 1.29" in older.stderr
    assert "needs slideJob.backoffLimitPerIndex" in render_failure(helm, on(maxFailedIndexes=1))
    error = render_failure(helm, on(backoffLimitPerIndex=1, maxFailedIndexes=2))
    assert "maxFailedIndexes (2) must be below the number of shards (2)" in error


# The Job


def test_the_job_is_indexed_with_completions_and_parallelism_from_values(objects: list[Obj]) -> None:
    job = the_job(objects)
    spec = job["spec"]
    assert job["apiVersion"] == "batch/v1"
    assert job["metadata"]["labels"][k8s_policy.COMPONENT] == "slides"
    assert spec["completionMode"] == "Indexed"
    assert (
        (spec["completions"], spec["parallelism"])
        == (CI_VALUES["shards"], CI_VALUES["parallelism"])
        == (2, 2)
    )
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (4, 86400)
    assert "ttlSecondsAfterFinished" not in spec  # kept: Helm would create a deleted Job again
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["template"]["metadata"]["labels"][k8s_policy.COMPONENT] == "slides"
    # Evictions (node drains, preemption) do not use up the retries.
    assert spec["podFailurePolicy"] == {
        "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
    }


def test_shards_default_to_one_per_slide_and_never_exceed_the_slides(helm: str) -> None:
    spec = the_job(render_with(helm, on(slides=["a.svs", "b.svs", "c.svs"])))["spec"]
    assert (spec["completions"], spec["parallelism"]) == (3, DEFAULTS["slideJob"]["parallelism"])
    assert option(the_job_args(spec), "--shard") == "$(SLIDE_SHARD)/3"
    spec = the_job(render_with(helm, on(shards=1, parallelism=5, ttlSecondsAfterFinished=0)))["spec"]
    assert (spec["completions"], spec["parallelism"], spec["ttlSecondsAfterFinished"]) == (1, 5, 0)
    error = render_failure(helm, on(shards=3))
    assert "slideJob.shards (3) cannot exceed the number of slideJob.slides (2)" in error


def the_job_args(spec: Obj) -> list[str]:
    (container,) = spec["template"]["spec"]["containers"]
    return container["args"]


def test_the_args_carry_each_slide_under_the_mount_and_the_shard(objects: list[Obj]) -> None:
    container = the_container(objects)
    assert container["image"] == "ghcr.io/pcam-platform/pcam-training:0.1.0"
    assert container["command"] == ["pcam"]
    args = container["args"]
    slides = [f"/slides/{s}" for s in CI_VALUES["slides"]]
    assert args[: 2 + len(slides)] == ["slide", "predict", *slides]
    gateway = find(objects, "Service", full("gateway"))
    assert option(args, "--url") == f"http://{full('gateway')}:{gateway['spec']['ports'][0]['port']}"
    assert option(args, "-o") == "/slides/results"
    assert option(args, "--operating-point") == "screening"
    assert option(args, "--shard") == "$(SLIDE_SHARD)/2"
    assert (option(args, "--concurrency"), option(args, "--batch")) == ("2", "128")
    assert "--stride" not in args and "--mpp" not in args  # null: the CLI's defaults
    # The shard index: the pod's completion index, through the downward API.
    variables = env(container)
    assert variables["SLIDE_SHARD"] == {
        "name": "SLIDE_SHARD",
        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{SHARD_INDEX}']"}},
    }
    assert variables["PCAM_API_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "pcam-slides-api-key", "key": "api-key"}
    }
    # Every $(NAME) in the args is a variable of the container (else Kubernetes leaves it as it is), and
    # the pods 0..N-1 together score every slide once.
    referenced = {m for a in args for m in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a)}
    assert referenced == {"SLIDE_SHARD"} and referenced <= set(variables)
    completions = the_job(objects)["spec"]["completions"]
    shards = [expand(option(args, "--shard"), {"SLIDE_SHARD": str(i)}) for i in range(completions)]
    assert shards == ["0/2", "1/2"]
    scored = [slide for shard in shards for slide in shard_of([Path(s) for s in slides], shard)]
    assert sorted(map(str, scored)) == sorted(slides)
    assert shard_of([Path(s) for s in slides], shards[0]) == [Path(slides[0]), Path(slides[2])]


def test_the_args_follow_the_values(helm: str) -> None:
    values = on(
        slides=["scans/$(HOME)/x.svs"],
        output="out/run-1",
        operatingPoint="high_specificity",
        stride=64,
        mpp=0.25,
        extraArgs=["--tta"],
        image={"repository": "lab/pcam-training", "tag": "0.2.0", "registry": "registry.example:5000"},
    )
    objects = render_with(helm, {**values, "gateway": {"service": {"port": 80}}})
    container = the_container(objects)
    args = container["args"]
    assert container["image"] == "registry.example:5000/lab/pcam-training:0.2.0"
    # A `$` of a file name is doubled: Kubernetes passes it on as it is, never as a variable.
    assert args[2] == "/slides/scans/$$(HOME)/x.svs"
    assert expand(args[2], {"HOME": "/work"}) == "/slides/scans/$(HOME)/x.svs"
    assert option(args, "--url") == f"http://{full('gateway')}:80"  # the Service's port
    assert option(args, "-o") == "/slides/out/run-1"
    assert option(args, "--operating-point") == "high_specificity"
    assert (option(args, "--stride"), option(args, "--mpp")) == ("64", "0.25")
    assert "--concurrency" not in args and "--batch" not in args
    assert args[-1] == "--tta"
    assert "PCAM_API_KEY" not in env(container)  # no key Secret: none sent


def test_the_options_are_those_of_pcam_slide_predict() -> None:
    """What the Job passes exists in the CLI: its options, the key's variable, the operating points."""
    root = typer.main.get_command(app)
    context = click.Context(root)
    command = root.get_command(context, "slide").get_command(context, "predict")
    options = {o for p in command.params for o in p.opts}
    api_key = next(p for p in command.params if "--api-key" in p.opts)
    assert api_key.envvar == "PCAM_API_KEY"
    passed = {"--url", "-o", "--operating-point", "--shard", "--concurrency", "--batch", "--stride", "--mpp"}
    assert passed - options == set(), f"pcam slide predict lacks {sorted(passed - options)}"
    schema = json.loads((CHART / "values.schema.json").read_text())
    points = schema["properties"]["slideJob"]["properties"]["operatingPoint"]["enum"]
    assert sorted(points) == sorted([*OPERATING_POINTS, *OPERATING_POINT_ALIASES])


def test_the_job_names_the_fields_it_cannot_change(helm: str) -> None:
    """A new name for a new pod template or completions (Kubernetes refuses to change them on a Job, so
    `helm upgrade` replaces it); the same one for what may change (parallelism, limits)."""

    def name(**slide_job: Any) -> str:
        return the_job(render_with(helm, on(**slide_job)))["metadata"]["name"]

    base = name()
    assert re.fullmatch(rf"{full('slides')}-[0-9a-f]{{8}}", base)
    assert name(parallelism=7, backoffLimit=1, activeDeadlineSeconds=60, ttlSecondsAfterFinished=3600) == base
    changed = {
        name(slides=["a.svs"]),
        name(shards=1),
        name(image={"repository": "pcam-training", "tag": "0.2.0"}),
        name(output="elsewhere"),
    }
    assert base not in changed and len(changed) == 4
    long_name = render_with(helm, {**on(), "fullnameOverride": "p" * 80})
    assert len(the_job(long_name)["metadata"]["name"]) <= 56  # pods add -<index>, hostnames stay <= 63


# Volumes


def test_the_slides_come_from_an_existing_claim(objects: list[Obj]) -> None:
    container = the_container(objects)
    assert volumes(objects)["slides"] == {
        "name": "slides",
        "persistentVolumeClaim": {"claimName": "pcam-slides"},
    }
    paths = mounts(container)
    assert paths["/slides"] == {"name": "slides", "mountPath": "/slides"}  # writable: results beside them
    assert paths["/tmp"]["name"] == "tmp" and "emptyDir" in volumes(objects)["tmp"]
    assert paths["/work"]["name"] == "home" and "emptyDir" in volumes(objects)["home"]  # HOME
    assert "/results" not in paths


def test_the_slides_from_an_inline_volume_source_and_the_results_on_a_claim(helm: str) -> None:
    csi = {"csi": {"driver": "example.csi.k8s.io", "readOnly": True, "volumeAttributes": {"bucket": "scans"}}}
    objects = render_with(
        helm, on(volume={"volume": csi}, outputVolume={"existingClaim": "pcam-results"}, output=".")
    )
    container = the_container(objects)
    assert volumes(objects)["slides"] == {"name": "slides", **csi}
    assert volumes(objects)["results"] == {
        "name": "results",
        "persistentVolumeClaim": {"claimName": "pcam-results"},
    }
    paths = mounts(container)
    assert paths["/slides"]["readOnly"] is True
    assert paths["/results"] == {"name": "results", "mountPath": "/results"}
    assert option(container["args"], "-o") == "/results"
    nfs = {"nfs": {"server": "nfs.example.internal", "path": "/export/results"}}
    objects = render_with(helm, on(outputVolume={"volume": nfs}))
    assert volumes(objects)["results"] == {"name": "results", **nfs}
    assert option(the_container(objects)["args"], "-o") == "/results/results"


@pytest.mark.parametrize(
    ("slide_job", "message"),
    [
        (
            {"volume": {"existingClaim": ""}},
            "slideJob.volume.existingClaim or slideJob.volume.volume is required",
        ),
        (
            {"volume": {"existingClaim": "a", "volume": {"emptyDir": {}}}},
            "slideJob.volume: set existingClaim or volume",
        ),
        (
            {"outputVolume": {"existingClaim": "a", "volume": {"emptyDir": {}}}},
            "slideJob.outputVolume: set existingClaim or volume",
        ),
        ({"batch": 300}, "slideJob.batch (300) exceeds the patches the gateway takes per request"),
        # The CLI names every output and checkpoint after the file's stem (Path.stem).
        ({"slides": ["a/x.ome.tif", "b/x.ome.svs"]}, 'a/x.ome.tif and b/x.ome.svs share the name "x.ome"'),
    ],
)
def test_inconsistent_settings_fail_the_render(helm: str, slide_job: dict, message: str) -> None:
    assert message in render_failure(helm, on(**slide_job))


def test_the_job_needs_a_key_when_the_gateway_wants_one(helm: str) -> None:
    keys = {"gateway": {"apiKeys": {"existingSecret": "pcam-api-keys"}}}
    assert "slideJob.apiKeySecret is required" in render_failure(helm, {**on(), **keys})
    objects = render_with(helm, {**on(apiKeySecret="slide-key", apiKeySecretKey="key"), **keys})
    assert env(the_container(objects))["PCAM_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "slide-key",
        "key": "key",
    }
    # A larger gateway batch admits a larger Job batch.
    render_with(helm, {**on(batch=300), "shared": {"maxImages": 512}})


# The schema


@pytest.mark.parametrize(
    "slide_job",
    [
        {"enabled": True, "volume": {"existingClaim": "scans"}},  # no slides
        {"enabled": True, "slides": [], "volume": {"existingClaim": "scans"}},
        {**ON["slideJob"], "shard": 2},  # unknown keys
        {**ON["slideJob"], "volume": {"claimName": "scans"}},
        {**ON["slideJob"], "outputVolume": {"existingClaim": "r", "subPath": "x"}},
        {**ON["slideJob"], "slides": ["/abs/a.svs"]},  # paths relative to the mount
        {**ON["slideJob"], "slides": ["../other/a.svs"]},
        {**ON["slideJob"], "output": "a/../../etc"},
        {**ON["slideJob"], "slides": ["a.svs", "a.svs"]},
        {**ON["slideJob"], "shards": -1},
        {**ON["slideJob"], "parallelism": 0},
        {**ON["slideJob"], "operatingPoint": "sensitive"},
        {**ON["slideJob"], "batch": 0},
        {**ON["slideJob"], "image": {"repository": "pcam-training", "tag": "latest"}},
        {**ON["slideJob"], "volume": {"volume": {"name": "x", "emptyDir": {}}}},  # the chart names it
        {**ON["slideJob"], "volume": {"volume": {"emptyDir": {}, "nfs": {}}}},  # one source
        {**ON["slideJob"], "resources": {"limits": None}},  # null deletes the default
    ],
    ids=lambda v: json.dumps(v, separators=(",", ":")),
)
def test_the_schema_refuses_bad_slide_job_values(helm: str, slide_job: dict) -> None:
    done = run_helm(helm, "template", RELEASE, str(CHART), values={"slideJob": slide_job})
    assert done.returncode != 0
    assert "don't meet the specifications of the schema" in done.stderr, done.stderr


def test_the_schema_lets_a_job_that_is_off_keep_no_slides(helm: str) -> None:
    render_with(helm, {"slideJob": {"enabled": False, "slides": []}})


# Policies


def test_the_job_pod_passes_the_chart_policies(objects: list[Obj]) -> None:
    pods = {p.where: p for p in k8s_policy.pod_templates(objects)}
    job = pods[f"Job/{the_job(objects)['metadata']['name']}"]
    assert not job.long_running  # run to completion: no probes wanted
    assert job.spec["automountServiceAccountToken"] is False
    assert job.spec["serviceAccountName"] == f"{RELEASE}-pcam"
    assert job.spec["securityContext"]["runAsUser"] == 10001  # the training image's user
    assert k8s_policy.all_violations(objects) == []
    assert k8s_policy.check_default_deny(objects) == []
    # No RBAC of its own, nothing but the Job and its NetworkPolicy added.
    assert not [
        o for o in objects if o["kind"] in {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
    ]
    # Every PCAM_* variable is a service's setting or an option of the Job's command: the CLI's key.
    assert settings_env_violations(objects) == []
    assert [n for n in env(the_container(objects)) if n.startswith("PCAM_")] == ["PCAM_API_KEY"]


def test_the_policy_checks_see_the_job_pod(objects: list[Obj]) -> None:
    """A Job pod that breaks the policies is reported (the checks above do look at it)."""
    broken = json.loads(json.dumps(objects))
    spec = the_job(broken)["spec"]["template"]["spec"]
    spec["automountServiceAccountToken"] = True
    del spec["containers"][0]["resources"]["limits"]
    violations = k8s_policy.all_violations(broken)
    assert any(v.startswith("Job/") and "automountServiceAccountToken" in v for v in violations)
    assert any(v.startswith("Job/") and "no memory limit" in v for v in violations)


# Network flows


def slide_flows(objects: list[Obj]) -> tuple[list[k8s_policy.Flow], list[k8s_policy.Flow]]:
    """(required, forbidden) flows of the Job's pods: the gateway's port and DNS out, nothing in."""
    flow = k8s_policy.Flow
    pods = k8s_policy.release_pods(objects)
    job, gateway = pods["slides"], pods["gateway"]
    required = [flow(job, gateway, GATEWAY_PORT), *(flow(job, KUBE_DNS, 53, p) for p in ("UDP", "TCP"))]
    forbidden = [
        *(flow(job, gateway, port) for port in (80, 443, 8081)),
        *(flow(job, pods["triton"], port) for port in (8000, 8001, 8002)),
        flow(job, pods["preprocess"], 8081),
        flow(job, pods.get("ensemble", pods["triton"]), 8082),
        flow(job, INTERNET, 443),
        flow(job, INTERNET, 80),
        flow(job, OTHER_NAMESPACE_POD, 8080),
        flow(job, NEIGHBOUR, 8080),
        *(
            flow(source, job, port)
            for source in (
                *(p for c, p in pods.items() if c != "slides"),
                PROMETHEUS,
                OTHER_NAMESPACE_POD,
                NEIGHBOUR,
            )
            for port in (GATEWAY_PORT, 8000, 9000)
        ),
    ]
    if "redis" in pods:
        forbidden.append(flow(job, pods["redis"], 6379))
    return required, forbidden


def assert_flows(objects: list[Obj]) -> None:
    required, forbidden = slide_flows(objects)
    platform_required, platform_forbidden = platform_flows(objects)  # the job pod among "every pod" there
    assert (
        k8s_policy.check_flows(objects, [*required, *platform_required], [*forbidden, *platform_forbidden])
        == []
    )


def test_the_job_reaches_only_the_gateway_and_nothing_reaches_it(objects: list[Obj]) -> None:
    assert_flows(objects)
    (policy,) = [
        p for p in k8s_policy.by_kind(objects, "NetworkPolicy") if p["metadata"]["name"] == full("slides")
    ]
    assert policy["spec"]["ingress"] == [] and set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}


@pytest.mark.parametrize("name", ["default", "external-redis"])
def test_the_job_still_reaches_a_gateway_open_only_to_some_peers(helm: str, name: str) -> None:
    """networkPolicy.gateway.ingressFrom restricted (the external-redis value set: the ingress controller
    only, API keys on): the gateway's policy admits the Job's pods too, and nothing else new."""
    values = {**on(apiKeySecret="slide-key"), "networkPolicy": {"gateway": {"ingressFrom": INGRESS_NGINX}}}
    objects = render_with(helm, values, name)
    assert_flows(objects)
    pods = k8s_policy.release_pods(objects)
    assert not k8s_policy.reachable(objects, k8s_policy.Flow(NEIGHBOUR, pods["gateway"], GATEWAY_PORT))
    # The gateway's policy is what lets the Job in: without its peer, the flow is denied.
    gateway_policy = find(objects, "NetworkPolicy", full("gateway"))
    (rule, *_) = gateway_policy["spec"]["ingress"]
    job_peer = {"podSelector": {"matchLabels": {**selector_labels(), k8s_policy.COMPONENT: "slides"}}}
    assert job_peer in rule["from"]
    rule["from"].remove(job_peer)
    assert not k8s_policy.reachable(objects, k8s_policy.Flow(pods["slides"], pods["gateway"], GATEWAY_PORT))


def selector_labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": "pcam", "app.kubernetes.io/instance": RELEASE}
