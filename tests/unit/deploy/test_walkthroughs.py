"""The deployment walk-throughs a user copies (docs/deployment.md, k8s/README.md), run as written, offline.

Every code block marked `<!-- walkthrough: NAME -->` runs with stand-ins for the commands that need a
cluster, a Docker engine or a GPU (tests/unit/deploy/walkthrough.py says what each becomes: `helm
install` -> `helm template`, `kubectl create secret` -> `--dry-run=client`, `kubectl apply -k` ->
`kubectl kustomize`, `docker compose up` -> `docker-compose config`, ...). The checks then ask whether the
steps fit together the way the cluster would need them to: names, keys, paths, namespaces, images.
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.gateway.auth import ApiKeys
from tests.unit.deploy import k8s_policy
from tests.unit.deploy.conftest import ROOT, kubernetes_validate_output
from tests.unit.deploy.test_compose import _services, _triton_like
from tests.unit.deploy.test_helm_chart import DEFAULTS, mounts, render_with
from tests.unit.deploy.walkthrough import Block, Call, Walkthrough, block, blocks

DEPLOYMENT = ROOT / "docs" / "deployment.md"
K8S_README = ROOT / "k8s" / "README.md"
KUBERNETES_VERSION = "1.37.0"
GPU_VALUES = ROOT / "helm" / "pcam" / "ci" / "gpu-autoscaling-monitoring-values.yaml"
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
BASE_REGISTRY = "ghcr.io/pcam-platform/"  # the images the chart and the kustomize base name by default
HELM_GPU = ("helm-gpu-repository", "helm-gpu-volume", "helm-gpu-secrets", "helm-gpu-install")
KUSTOMIZE = {  # walk-through -> (doc, its blocks in order, the namespace it deploys into)
    "deployment.md gpu-prod": (DEPLOYMENT, ("kustomize-gpu-prod",), "pcam"),
    "k8s/README.md cpu-dev": (K8S_README, ("k8s-secrets", "k8s-overlay", "k8s-load"), "pcam-dev"),
}
RUN_BY_THESE_TESTS = {
    DEPLOYMENT: {
        "build-images",
        "compose-cpu",
        "compose-gpu",
        *HELM_GPU,
        "helm-gpu-object-storage",
        "helm-gpu-object-storage-values",
        "helm-gpu-redis-secret",
        "kustomize-gpu-prod",
    },
    K8S_README: {"k8s-secrets", "k8s-overlay", "k8s-loader", "k8s-load"},
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}
REFERENCE = re.compile(r"^(deploy|deployment|svc|service|pod)/(?P<name>[\w.-]+)$")
KINDS = {
    "deploy": "Deployment",
    "deployment": "Deployment",
    "svc": "Service",
    "service": "Service",
    "pod": "Pod",
}

Obj = dict[str, Any]


@pytest.fixture
def walk(tmp_path: Path, kubectl: str, helm: str, docker_compose: str) -> Callable[[str], Walkthrough]:
    """name -> a fresh scratch repository root with the stand-ins."""

    def make(name: str) -> Walkthrough:
        workdir = tmp_path / name
        workdir.mkdir()
        return Walkthrough(
            ROOT, workdir, {"kubectl": kubectl, "helm": helm, "docker-compose": docker_compose}
        )

    return make


@pytest.fixture(scope="module")
def pushed_images(
    tmp_path_factory: pytest.TempPathFactory, kubectl: str, helm: str, docker_compose: str
) -> set[str]:
    """The images docs/deployment.md builds and pushes ("Building the images")."""
    workdir = tmp_path_factory.mktemp("build") / "repo"
    workdir.mkdir()
    walkthrough = Walkthrough(
        ROOT, workdir, {"kubectl": kubectl, "helm": helm, "docker-compose": docker_compose}
    )
    calls = walkthrough.run(block(DEPLOYMENT, "build-images"))
    built = {c.result["built"] for c in calls if c.tool == "docker" and "built" in c.result}
    pushed = {c.result["pushed"] for c in calls if c.tool == "docker" and "pushed" in c.result}
    assert pushed == built, "every image built is pushed, and only those"
    return pushed


# Reading the calls and the objects


def calls_of(calls: list[Call], tool: str, *verbs: str) -> list[Call]:
    return [c for c in calls if c.tool == tool and c.args[: len(verbs)] == list(verbs)]


def created_secrets(calls: list[Call]) -> dict[tuple[str, str], dict[str, str]]:
    """(namespace, name) -> decoded data of every Secret the steps created."""
    secrets = {}
    for call in calls_of(calls, "kubectl", "create", "secret"):
        (secret,) = call.result["objects"]
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        secrets[(secret["metadata"]["namespace"], secret["metadata"]["name"])] = data
    return secrets


def single(calls: list[Call], tool: str, *verbs: str) -> Call:
    found = calls_of(calls, tool, *verbs)
    assert len(found) == 1, f"{tool} {' '.join(verbs)}: {len(found)} calls"
    return found[0]


def workload(objects: list[Obj], component: str, kind: str = "Deployment") -> Obj:
    (found,) = [
        o
        for o in k8s_policy.by_kind(objects, kind)
        if o["spec"]["template"]["metadata"]["labels"].get(k8s_policy.COMPONENT) == component
    ]
    return found


def main_container(objects: list[Obj], component: str) -> Obj:
    (found,) = [
        c
        for c in workload(objects, component)["spec"]["template"]["spec"]["containers"]
        if c["name"] == component
    ]
    return found


def volume(deployment: Obj, name: str) -> Obj:
    (found,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == name]
    return found


def gateway_config(objects: list[Obj]) -> dict[str, str]:
    (ref,) = main_container(objects, "gateway")["envFrom"]
    (config,) = [
        o
        for o in k8s_policy.by_kind(objects, "ConfigMap")
        if o["metadata"]["name"] == ref["configMapRef"]["name"]
    ]
    return config["data"]


def pcam_images(objects: list[Obj]) -> set[str]:
    """The platform's own images (named pcam-*) of every pod, init containers included."""
    return {
        container["image"]
        for pod in k8s_policy.pod_templates(objects)
        for _, container, _ in k8s_policy.containers(pod)
        if container["image"].rsplit("/", 1)[-1].startswith("pcam-")
    }


def namespaces_exist_before_use(calls: list[Call]) -> list[str]:
    """Calls that use a namespace no earlier step created (helm's --create-namespace counts)."""
    created, problems = set(), []
    for call in calls:
        if call.tool == "kubectl" and call.args[:2] == ["create", "namespace"]:
            created.add(call.args[2])
        elif call.namespace is not None and call.namespace not in created:
            if call.tool == "helm" and "--create-namespace" in call.args:
                created.add(call.namespace)
            else:
                problems.append(f"{call.command()}: namespace {call.namespace} not created before")
    return problems


def objects_land_in_their_namespace(calls: list[Call], elsewhere: frozenset[str] = frozenset()) -> list[str]:
    """Objects applied (or rendered by helm install) whose namespace is not the call's, nor one of
    `elsewhere` (namespaces the values send some objects to on purpose)."""
    problems = []
    for call in calls:
        if call.tool not in ("kubectl", "helm") or "objects" not in call.result:
            continue
        target = call.namespace
        for obj in call.result["objects"]:
            if obj["kind"] in CLUSTER_SCOPED:
                continue
            own = obj.get("metadata", {}).get("namespace")
            if own is None and target is None:
                problems.append(f"{call.command()}: {obj['kind']}/{obj['metadata']['name']} has no namespace")
            elif own is not None and target is not None and own not in (target, *elsewhere):
                problems.append(
                    f"{call.command()}: {obj['kind']}/{obj['metadata']['name']} in {own}, not {target}"
                )
    return problems


def references_exist(calls: list[Call], objects: list[Obj]) -> list[str]:
    """kubectl's `deploy/NAME`, `svc/NAME`, `pod/NAME` and `exec POD` name objects that exist."""
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    problems = []
    for call in calls:
        if call.tool != "kubectl":
            continue
        referenced = [m for a in call.args for m in [REFERENCE.match(a)] if m]
        wanted = [(KINDS[m[1]], m["name"]) for m in referenced]
        if call.args[:1] == ["exec"]:
            wanted.append(("Pod", call.result["pod"]))
        if call.args[:2] == ["delete", "pod"]:
            wanted.append(("Pod", call.args[2]))
        problems += [
            f"{call.command()}: no {kind}/{name}" for kind, name in wanted if (kind, name) not in names
        ]
    return problems


def api_key_entries(secret_data: dict[str, str], key: str) -> ApiKeys:
    assert key in secret_data, f"the key file is not under {key!r} (it holds {sorted(secret_data)})"
    return ApiKeys.parse(secret_data[key].splitlines(), key)


# The walk-throughs


def test_every_marked_block_is_run_by_a_test() -> None:
    for doc, names in RUN_BY_THESE_TESTS.items():
        marked = [b.name for b in blocks(doc)]
        assert len(marked) == len(set(marked)), f"{doc.name}: a walkthrough name is used twice"
        assert set(marked) == names, f"{doc.name}: marked {sorted(marked)}"


def test_the_images_built_are_the_ones_the_dockerfiles_make(pushed_images: set[str]) -> None:
    registries = {image.rsplit("/", 1)[0] for image in pushed_images}
    assert len(registries) == 1
    tag = yaml.safe_load((ROOT / "helm" / "pcam" / "Chart.yaml").read_text())["appVersion"]
    names = {image.rsplit("/", 1)[1] for image in pushed_images}
    assert names == {
        f"pcam-{n}:{tag}" for n in ("gateway", "preprocess", "ensemble", "triton-cpu", "training")
    }


def test_compose_cpu_as_documented(walk: Callable[[str], Walkthrough]) -> None:
    walkthrough = walk("compose-cpu")
    calls = walkthrough.run(block(DEPLOYMENT, "compose-cpu"))
    up = single(calls, "docker", "compose")
    assert up.result["compose"] == "up" and up.result["global_args"] == []
    model = up.result["model"]
    assert _triton_like(model) == {"triton"}
    assert up.result["missing_bind_sources"] == [], "compose would start on directories Docker makes empty"
    for name in ("triton", "preprocess", "ensemble"):
        (models,) = [v for v in _services(model)[name]["volumes"] if v["target"] == "/models"]
        assert models["source"] == str(walkthrough.workdir / "model_repository")


def test_compose_gpu_as_documented_serves_the_retargeted_release(walk: Callable[[str], Walkthrough]) -> None:
    walkthrough = walk("compose-gpu")
    calls = walkthrough.run(block(DEPLOYMENT, "compose-gpu"))
    retarget = single(calls, "pcam", "retarget")
    assert retarget.result["params"]["target"] == "gpu"
    up = single(calls, "docker", "compose")
    assert up.result["compose"] == "up" and up.result["global_args"] == ["--profile", "gpu"]
    assert calls.index(retarget) < calls.index(up), "the gpu repository is made before the stack starts"
    model = up.result["model"]
    assert _triton_like(model) == {"triton-gpu"}
    # Every mounted directory exists when compose starts: Docker would create a missing one empty.
    assert up.result["missing_bind_sources"] == []
    (gpu_models,) = [v for v in _services(model)["triton-gpu"]["volumes"] if v["target"] == "/models"]
    assert gpu_models["source"] == str(walkthrough.workdir / retarget.result["params"]["output"])
    for name in ("preprocess", "ensemble"):  # release.json of the same release, from the cpu repository
        (models,) = [v for v in _services(model)[name]["volumes"] if v["target"] == "/models"]
        assert models["source"] == str(walkthrough.workdir / retarget.result["params"]["repository"])
    assert _services(model)["triton-gpu"]["image"] in gpu_requirements()


def run_helm_gpu(walk: Callable[[str], Walkthrough]) -> tuple[Walkthrough, list[Call]]:
    walkthrough = walk("helm-gpu")
    walkthrough.save(block(K8S_README, "k8s-loader"))  # "the loader pod of k8s/README.md"
    walkthrough.run(Block("a built release", "bash", "make repository\n", DEPLOYMENT, 0))
    calls = walkthrough.run(*(block(DEPLOYMENT, name) for name in HELM_GPU))
    return walkthrough, calls


def test_helm_gpu_install_as_documented(
    walk: Callable[[str], Walkthrough], kubernetes_validate: str, tmp_path: Path, pushed_images: set[str]
) -> None:
    walkthrough, calls = run_helm_gpu(walk)
    install = single(calls, "helm", "install")
    objects = install.result["objects"]
    # The documented values file and flags render, and the render passes the schemas and the policies.
    assert "-f" in install.args and install.args[install.args.index("-f") + 1] == "my-values.yaml"
    mine = yaml.safe_load((walkthrough.workdir / "my-values.yaml").read_text())
    assert {k: v for k, v in mine.items() if k != "image"} == yaml.safe_load(GPU_VALUES.read_text())
    manifests = yaml.safe_dump_all(objects)
    kubernetes_validate_output(kubernetes_validate, manifests, tmp_path, KUBERNETES_VERSION)
    assert k8s_policy.all_violations(objects) == []
    assert namespaces_exist_before_use(calls) == []
    # Only the dashboards go elsewhere: to Grafana's namespace, as the doc says.
    grafana = yaml.safe_load(GPU_VALUES.read_text())["monitoring"]["dashboards"]["namespace"]
    assert f"`monitoring.dashboards.namespace: {grafana}`" in DEPLOYMENT.read_text()
    assert objects_land_in_their_namespace(calls, frozenset({grafana})) == []
    applied = [o for c in calls_of(calls, "kubectl", "apply") for o in c.result["objects"]]
    assert references_exist(calls, objects + applied) == []
    assert single(calls, "helm", "test").args[1] == install.args[1]  # the release installed
    assert pcam_images(objects) <= pushed_images, "the chart pulls images the build step never pushed"
    assert (
        workload(objects, "triton")["spec"]["template"]["spec"]["containers"][0]["image"]
        in gpu_requirements()
    )

    # API keys: the Secret the doc creates, under the key the rendered gateway mounts.
    secrets = created_secrets(calls)
    gateway = workload(objects, "gateway")
    keys_volume = volume(gateway, "api-keys")["secret"]
    (item,) = keys_volume["items"]
    mount = mounts(main_container(objects, "gateway"))
    mount_path = next(p for p, m in mount.items() if m["name"] == "api-keys")
    assert gateway_config(objects)["PCAM_GATEWAY_API_KEY_FILE"] == f"{mount_path}/{item['path']}"
    assert (install.namespace, keys_volume["secretName"]) in secrets, (
        "the gateway mounts a Secret no step made"
    )
    keys = api_key_entries(secrets[(install.namespace, keys_volume["secretName"])], item["key"])
    assert {name for name, _ in keys.entries} == {"lab-a", "helm-test"}
    # `helm test` sends the helm-test key, which the key file holds.
    (test_pod,) = [
        o for o in objects if o["kind"] == "Pod" and o["metadata"]["name"].endswith("-test-prediction")
    ]
    env = {e["name"]: e for e in test_pod["spec"]["containers"][0]["env"]}
    assert env["API_KEYS_ON"]["value"] == "true"
    reference = env["API_KEY"]["valueFrom"]["secretKeyRef"]
    test_secret = secrets[(install.namespace, reference["name"])]
    assert keys.identify(test_secret[reference["key"]]) == "helm-test"

    # The release is copied to the directory of the claim that the pods mount.
    (claim,) = [
        o
        for c in calls_of(calls, "kubectl", "apply")
        for o in c.result["objects"]
        if o["kind"] == "PersistentVolumeClaim"
    ]
    (loader,) = [
        o for c in calls_of(calls, "kubectl", "apply") for o in c.result["objects"] if o["kind"] == "Pod"
    ]
    assert (
        volume({"spec": {"template": loader}}, "models")["persistentVolumeClaim"]["claimName"]
        == claim["metadata"]["name"]
    )
    copies = [
        c.result["exec"] for c in calls_of(calls, "kubectl", "exec") if c.result["exec"][:2] == ["tar", "-xf"]
    ]
    (copy,) = copies
    loader_mount = loader["spec"]["containers"][0]["volumeMounts"][0]["mountPath"]
    directory = copy[copy.index("-C") + 1]
    assert directory.startswith(loader_mount + "/")
    for component in ("triton", "preprocess", "ensemble"):
        models = volume(workload(objects, component), "models")["persistentVolumeClaim"]
        assert models["claimName"] == claim["metadata"]["name"]
        assert mounts(main_container(objects, component))["/models"]["subPath"] == directory.removeprefix(
            loader_mount + "/"
        )
    retarget = single(calls, "pcam", "retarget")
    assert retarget.result["params"]["target"] == "gpu"
    assert (walkthrough.workdir / retarget.result["params"]["output"] / "release.json").exists()


def test_helm_gpu_alternatives_as_documented(walk: Callable[[str], Walkthrough], helm: str) -> None:
    """Object storage instead of the volume; the Redis Secret GitOps renderers need."""
    walkthrough, calls = run_helm_gpu(walk)
    install = single(calls, "helm", "install")
    storage = walkthrough.run(block(DEPLOYMENT, "helm-gpu-object-storage"))
    redis = walkthrough.run(block(DEPLOYMENT, "helm-gpu-redis-secret"))
    assert namespaces_exist_before_use(calls + storage + redis) == []
    secrets = created_secrets(storage + redis)
    sync = single(storage, "aws", "s3", "sync")
    retarget = single(calls, "pcam", "retarget")
    assert sync.result["source"] == str(walkthrough.workdir / retarget.result["params"]["output"])

    values = yaml.safe_load(block(DEPLOYMENT, "helm-gpu-object-storage-values").code)
    ((_, redis_secret),) = created_secrets(redis)
    values["redis"] = {"auth": {"existingSecret": redis_secret}}  # as the doc says to set
    (walkthrough.workdir / "alternatives.yaml").write_text(yaml.safe_dump(values))
    again = f"helm install {shlex.join(install.args[1:])} -f alternatives.yaml -n {install.namespace}\n"
    done = walkthrough.run(Block("render", "bash", again, DEPLOYMENT, 0))
    objects = done[-1].result["objects"]
    for component in ("triton", "preprocess", "ensemble"):
        (init,) = workload(objects, component)["spec"]["template"]["spec"]["initContainers"]
        assert sync.result["destination"] in init["args"]
        (source,) = init["envFrom"]
        assert (install.namespace, source["secretRef"]["name"]) in secrets
    credentials = secrets[(install.namespace, init["envFrom"][0]["secretRef"]["name"])]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(credentials)
    # The generated password is gone; the gateway and Redis read the Secret the doc made, by its key.
    assert not [o for o in k8s_policy.by_kind(objects, "Secret")]
    (item,) = volume(workload(objects, "gateway"), "redis-password")["secret"]["items"]
    assert item["key"] in secrets[(install.namespace, redis_secret)]


@pytest.mark.parametrize("name", list(KUSTOMIZE))
def test_kustomize_as_documented(
    walk: Callable[[str], Walkthrough],
    helm: str,
    kubernetes_validate: str,
    tmp_path: Path,
    pushed_images: set[str],
    name: str,
) -> None:
    doc, names, namespace = KUSTOMIZE[name]
    walkthrough = walk(name.replace(" ", "-").replace("/", "-"))
    walkthrough.save(block(K8S_README, "k8s-loader"))
    calls = walkthrough.run(*(block(doc, n) for n in names))
    apply = single(calls, "kubectl", "apply", "-k")
    objects = apply.result["objects"]
    assert apply.result["kustomization"] not in ("k8s/overlays/cpu-dev", "k8s/overlays/gpu-prod")
    assert {o["metadata"]["namespace"] for o in objects if o["kind"] not in CLUSTER_SCOPED} == {namespace}
    assert namespaces_exist_before_use(calls) == []
    assert objects_land_in_their_namespace(calls) == []
    applied = [o for c in calls_of(calls, "kubectl", "apply", "-f") for o in c.result["objects"]]
    assert references_exist(calls, objects + applied) == []
    kubernetes_validate_output(kubernetes_validate, yaml.safe_dump_all(objects), tmp_path, KUBERNETES_VERSION)
    assert k8s_policy.all_violations(objects + applied) == []

    # Every platform image comes from the user's registry, as built and pushed; none from the base's.
    images = pcam_images(objects)
    assert images and images <= pushed_images, images
    every_image = {
        c["image"] for pod in k8s_policy.pod_templates(objects) for _, c, _ in k8s_policy.containers(pod)
    }
    assert not [image for image in every_image if image.startswith(BASE_REGISTRY)]
    # `kubectl kustomize my-overlay | grep image:` shows the same build.
    for shown in calls_of(calls, "kubectl", "kustomize"):
        assert shown.result["objects"] == objects

    # The Secrets exist in the namespace, under the keys the pods read.
    secrets = created_secrets(calls)
    redis_secret = volume(workload(objects, "gateway"), "redis-password")["secret"]
    assert {i["key"] for i in redis_secret["items"]} <= set(secrets[(namespace, redis_secret["secretName"])])
    # API keys as the chart wires them (gateway.apiKeys), from the Secret the doc made.
    keys_volume = volume(workload(objects, "gateway"), "api-keys")
    chart = render_with(
        helm, {"gateway": {"apiKeys": {"existingSecret": keys_volume["secret"]["secretName"]}}}
    )
    chart_gateway = workload(chart, "gateway")
    assert keys_volume == volume(chart_gateway, "api-keys")
    chart_mounts = {m["name"]: m for m in mounts(main_container(chart, "gateway")).values()}
    own_mounts = {m["name"]: m for m in mounts(main_container(objects, "gateway")).values()}
    assert own_mounts["api-keys"] == chart_mounts["api-keys"]
    key_file = gateway_config(objects)["PCAM_GATEWAY_API_KEY_FILE"]
    assert key_file == gateway_config(chart)["PCAM_GATEWAY_API_KEY_FILE"]
    (item,) = keys_volume["secret"]["items"]
    keys = api_key_entries(secrets[(namespace, keys_volume["secret"]["secretName"])], item["key"])
    assert [n for n, _ in keys.entries] == ["lab-a"]

    if "k8s-load" in names:  # the model repository copied onto the claim the pods mount
        (loader,) = [o for o in applied if o["kind"] == "Pod"]
        claim = loader["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
        assert claim in {o["metadata"]["name"] for o in k8s_policy.by_kind(objects, "PersistentVolumeClaim")}
        for component in ("triton", "preprocess", "ensemble"):
            assert (
                volume(workload(objects, component), "models")["persistentVolumeClaim"]["claimName"] == claim
            )
        copies = [
            c.result["exec"]
            for c in calls_of(calls, "kubectl", "exec")
            if c.result["exec"][:2] == ["tar", "-xf"]
        ]
        assert copies == [["tar", "-xf", "-", "-C", "/models"]]
        assert single(calls, "make", "repository")


def gpu_requirements() -> str:
    text = DEPLOYMENT.read_text()
    return text[
        text.index("## GPU requirements") : text.index("\n## ", text.index("## GPU requirements") + 1)
    ]


def pins() -> dict[str, str]:
    return dict(
        line.split("==", 1)
        for line in CONSTRAINTS.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )


def test_the_gpu_requirements_name_the_images_and_pins_in_use() -> None:
    section = gpu_requirements()
    image = DEFAULTS["triton"]["gpu"]["image"]
    assert f"{image['registry']}/{image['repository']}:{image['tag']}" in section
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["triton-gpu"]["image"] in section
    pinned = pins()
    for package in ("torch", "torchvision"):
        assert f"{package} {pinned[package]}" in section
    # The CUDA of the torch wheels: the pinned cuda-toolkit and runtime, and cuDNN's CUDA major.
    cuda = pinned["cuda-toolkit"]
    assert f"`cuda-toolkit` {'.'.join(cuda.split('.')[:3])}" in section
    assert f"`nvidia-cuda-runtime` {pinned['nvidia-cuda-runtime']}" in section
    assert f"CUDA {'.'.join(cuda.split('.')[:2])} builds" in section
    assert "nvidia-cudnn-cu13" in pinned and "`nvidia-cudnn-cu13`" in section
    base = re.search(r"^FROM (\S+) AS training$", (ROOT / "docker" / "training.Dockerfile").read_text(), re.M)
    assert base and f"`{base[1]}`" in section
