"""Policy checks over rendered Kubernetes objects (Helm output, kustomize builds).

Every check takes the list of object dicts (`yaml.safe_load_all` of the manifests, `None`s dropped) and
returns a list of violation strings, empty when the objects comply; `all_violations` runs the checks
that every workload must pass. Selectors are matched on `matchLabels` only (what these manifests use).
`reachable` evaluates NetworkPolicies for one connection (the source's egress and the destination's
ingress); `check_flows` judges a table of required and forbidden connections with it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

COMPONENT = "app.kubernetes.io/component"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod")
SECRET_ENV_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIALS?|PRIVATE_KEY|ACCESS_KEY)", re.I)
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s@]*:[^/\s@]+@", re.I)


@dataclass(frozen=True)
class PodTemplate:
    """One pod spec of a workload: where it comes from, its labels, its spec."""

    where: str
    kind: str
    labels: dict[str, str]
    spec: Obj

    @property
    def long_running(self) -> bool:
        """Pods that are meant to keep running (not Jobs, not run-to-completion Pods such as helm tests)."""
        if self.kind in ("Job", "CronJob"):
            return False
        return not (self.kind == "Pod" and self.spec.get("restartPolicy", "Always") != "Always")


def by_kind(objects: Iterable[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o.get("kind") == kind]


def pod_templates(objects: Iterable[Obj]) -> Iterator[PodTemplate]:
    """Every pod spec: workloads' templates, CronJobs' job templates, bare Pods."""
    for obj in objects:
        kind = obj.get("kind")
        if kind not in WORKLOAD_KINDS:
            continue
        where = f"{kind}/{obj.get('metadata', {}).get('name')}"
        if kind == "Pod":
            template = obj
        elif kind == "CronJob":
            template = obj["spec"]["jobTemplate"]["spec"]["template"]
        else:
            template = obj["spec"]["template"]
        labels = template.get("metadata", {}).get("labels") or {}
        yield PodTemplate(where, kind, labels, template.get("spec") or {})


def containers(pod: PodTemplate) -> Iterator[tuple[str, Obj, bool]]:
    """(where, container, is_init) for the init containers and containers of a pod."""
    for key in ("initContainers", "containers"):
        for container in pod.spec.get(key) or []:
            yield f"{pod.where} {key[:-1]} {container.get('name')}", container, key == "initContainers"


def check_pod_security(objects: Iterable[Obj]) -> list[str]:
    """Non-root, read-only root filesystem, no privilege escalation, ALL capabilities dropped,
    seccomp RuntimeDefault, no service-account token, for every pod and container."""
    violations = []
    for pod in pod_templates(objects):
        spec, pod_sc = pod.spec, pod.spec.get("securityContext") or {}
        if spec.get("automountServiceAccountToken") is not False:
            violations.append(f"{pod.where}: automountServiceAccountToken is not false")
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag):
                violations.append(f"{pod.where}: {flag}")
        for where, container, _ in containers(pod):
            sc = container.get("securityContext") or {}
            run_as_non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            run_as_user = sc.get("runAsUser", pod_sc.get("runAsUser"))
            if run_as_non_root is not True or run_as_user == 0:
                violations.append(f"{where}: not forced to run as non-root")
            if sc.get("readOnlyRootFilesystem") is not True:
                violations.append(f"{where}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                violations.append(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                violations.append(f"{where}: privileged")
            capabilities = sc.get("capabilities") or {}
            if "ALL" not in (capabilities.get("drop") or []):
                violations.append(f"{where}: capabilities do not drop ALL")
            if capabilities.get("add"):
                violations.append(f"{where}: adds capabilities {capabilities['add']}")
            seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
            if seccomp != "RuntimeDefault":
                violations.append(f"{where}: seccompProfile is {seccomp!r}, not RuntimeDefault")
    return violations


def check_resources(objects: Iterable[Obj]) -> list[str]:
    """Requests and limits for cpu and memory on every container, init containers included."""
    violations = []
    for pod in pod_templates(objects):
        for where, container, _ in containers(pod):
            resources = container.get("resources") or {}
            for bound in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in (resources.get(bound) or {}):
                        violations.append(f"{where}: no {resource} {bound[:-1]}")
    return violations


def check_probes(objects: Iterable[Obj]) -> list[str]:
    """Liveness and readiness probes on every container of a long-running pod (sidecar init
    containers, restartPolicy Always, included; run-to-completion init containers and pods excluded)."""
    violations = []
    for pod in pod_templates(objects):
        if not pod.long_running:
            continue
        for where, container, is_init in containers(pod):
            if is_init and container.get("restartPolicy") != "Always":
                continue
            for probe in ("livenessProbe", "readinessProbe"):
                if not container.get(probe):
                    violations.append(f"{where}: no {probe}")
    return violations


def image_tag(image: str) -> str | None:
    """The tag of an image reference (None without one); a digest counts as a pinned tag."""
    if "@" in image:
        return image.split("@", 1)[1]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def check_images(objects: Iterable[Obj]) -> list[str]:
    """Every image carries a tag (or digest) and the tag is not `latest`."""
    violations = []
    for pod in pod_templates(objects):
        for where, container, _ in containers(pod):
            image = container.get("image") or ""
            tag = image_tag(image)
            if not image or tag in (None, "", "latest"):
                violations.append(f"{where}: image {image!r} is not pinned to a tag")
    return violations


def check_no_plaintext_secrets(objects: Iterable[Obj]) -> list[str]:
    """Secret-looking env vars come from Secrets (valueFrom), and no URL carries a password, in env
    values or ConfigMap data."""
    violations = []
    for pod in pod_templates(objects):
        for where, container, _ in containers(pod):
            for env in container.get("env") or []:
                value = env.get("value")
                if value is None:
                    continue
                if (
                    SECRET_ENV_NAME.search(env["name"])
                    and value != ""
                    and not _names_a_file(env["name"], value)
                ):
                    violations.append(f"{where}: {env['name']} has a plain value")
                if URL_WITH_PASSWORD.search(str(value)):
                    violations.append(f"{where}: {env['name']} holds a URL with a password")
    for config in by_kind(objects, "ConfigMap"):
        for key, value in (config.get("data") or {}).items():
            if (SECRET_ENV_NAME.search(key) and not _names_a_file(key, value)) or URL_WITH_PASSWORD.search(
                str(value)
            ):
                violations.append(f"ConfigMap/{config['metadata']['name']}: {key} looks like a secret")
    return violations


def _names_a_file(name: str, value: object) -> bool:
    """`*_FILE` variables holding an absolute path name where a secret is mounted, not the secret."""
    return name.endswith("_FILE") and isinstance(value, str) and value.startswith("/")


def all_violations(objects: Iterable[Obj]) -> list[str]:
    """Every workload check at once."""
    objects = list(objects)
    return [
        *check_pod_security(objects),
        *check_resources(objects),
        *check_probes(objects),
        *check_images(objects),
        *check_no_plaintext_secrets(objects),
    ]


# NetworkPolicies


def selects(selector: Obj | None, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels) selects these labels; {} selects everything."""
    selector = selector or {}
    if selector.get("matchExpressions"):
        raise NotImplementedError("matchExpressions are not supported by these checks")
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def policies_for(objects: Iterable[Obj], labels: dict[str, str]) -> list[Obj]:
    """The NetworkPolicies that select a pod with these labels."""
    return [p for p in by_kind(objects, "NetworkPolicy") if selects(p["spec"].get("podSelector"), labels)]


def is_default_deny(policy: Obj) -> bool:
    """A policy isolating its pods for ingress and egress without allowing anything."""
    spec = policy["spec"]
    return (
        set(spec.get("policyTypes") or []) == {"Ingress", "Egress"}
        and not spec.get("ingress")
        and not spec.get("egress")
    )


def check_default_deny(objects: Iterable[Obj]) -> list[str]:
    """Every pod is covered by a default-deny (ingress and egress) NetworkPolicy."""
    objects = list(objects)
    return _default_deny_violations(objects, pod_templates(objects))


def _default_deny_violations(objects: list[Obj], pods: Iterable[PodTemplate]) -> list[str]:
    return [
        f"{pod.where}: no default-deny NetworkPolicy selects it"
        for pod in pods
        if not any(is_default_deny(p) for p in policies_for(objects, pod.labels))
    ]


def ingress_peers(objects: Iterable[Obj], labels: dict[str, str]) -> list[tuple[Obj | None, list[Obj]]]:
    """(peer, ports) allowed into a pod with these labels; peer None: from anywhere."""
    allowed = []
    for policy in policies_for(objects, labels):
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from")
            ports = rule.get("ports") or []
            if not peers:
                allowed.append((None, ports))
            allowed.extend((peer, ports) for peer in peers or [])
    return allowed


def check_ingress_only_from(
    objects: Iterable[Obj],
    component: str,
    allowed_components: set[str],
    *,
    except_ports: set[int] = frozenset(),
    allowed_peers: Iterable[Obj] = (),
) -> list[str]:
    """Pods of `component` accept ingress only from pods of `allowed_components` in their own namespace
    or from exactly one of `allowed_peers` (e.g. the Prometheus scraper); rules whose ports are all in
    `except_ports` (a metrics-only port) are not judged; and the pods are isolated by a default deny."""
    allowed_peers = list(allowed_peers)
    objects = list(objects)
    pods = [p for p in pod_templates(objects) if p.labels.get(COMPONENT) == component]
    if not pods:
        return [f"no pod of component {component!r}"]
    violations = _default_deny_violations(objects, pods)
    for pod in pods:
        for peer, ports in ingress_peers(objects, pod.labels):
            port_numbers = {p.get("port") for p in ports}
            if (ports and port_numbers <= set(except_ports)) or (peer is not None and peer in allowed_peers):
                continue
            if peer is None:
                violations.append(
                    f"{pod.where}: ingress from anywhere on {sorted(port_numbers) or 'all ports'}"
                )
            elif "ipBlock" in peer or "namespaceSelector" in peer:
                violations.append(f"{pod.where}: ingress from {peer}")
            elif (peer.get("podSelector") or {}).get("matchLabels", {}).get(
                COMPONENT
            ) not in allowed_components:
                violations.append(f"{pod.where}: ingress from pods {peer.get('podSelector')}")
    return violations


# NetworkPolicy reachability


@dataclass(frozen=True, eq=False)
class Endpoint:
    """One end of a connection. A pod of the policies' namespace has `namespace` None; a pod elsewhere
    has its namespace's labels (namespaceSelector peers only ever select those: the policies' own
    namespace counts as another one's, since its labels are unknown here); something that is no pod
    (`pod` False) is reached through ipBlock peers only. `ports` names container ports (named ports)."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    namespace: Mapping[str, str] | None = None
    ip: str | None = None
    pod: bool = True
    ports: Mapping[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, eq=False)
class Flow:
    """A connection from `source` to `destination`'s `port`."""

    source: Endpoint
    destination: Endpoint
    port: int
    protocol: str = "TCP"

    def __str__(self) -> str:
        return f"{self.source} -> {self.destination}:{self.port}/{self.protocol}"


def release_pods(objects: Iterable[Obj]) -> dict[str, Endpoint]:
    """component -> an Endpoint for the pods of each workload (labels and named container ports)."""
    pods: dict[str, Endpoint] = {}
    for pod in pod_templates(objects):
        component = pod.labels.get(COMPONENT)
        if component is None or component in pods:
            continue
        named = {
            port["name"]: port["containerPort"]
            for _, container, _ in containers(pod)
            for port in container.get("ports") or []
            if port.get("name")
        }
        pods[component] = Endpoint(component, dict(pod.labels), ports=named)
    return pods


def _policy_types(policy: Obj) -> set[str]:
    spec = policy["spec"]
    if spec.get("policyTypes"):
        return set(spec["policyTypes"])
    return {"Ingress", "Egress"} if "egress" in spec else {"Ingress"}


def _peer_selects(peer: Obj, endpoint: Endpoint) -> bool:
    if "ipBlock" in peer:
        if endpoint.ip is None:
            return False
        address = ipaddress.ip_address(endpoint.ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(cidr) for cidr in block.get("except") or []
        )
    if not endpoint.pod:
        return False
    if "namespaceSelector" in peer:
        return (
            endpoint.namespace is not None
            and selects(peer["namespaceSelector"], endpoint.namespace)
            and selects(peer.get("podSelector"), endpoint.labels)
        )
    return endpoint.namespace is None and selects(peer.get("podSelector"), endpoint.labels)


def _port_allowed(ports: list[Obj] | None, port: int, protocol: str, named: Mapping[str, int]) -> bool:
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        number = entry.get("port")
        if number is None:
            return True
        if isinstance(number, str):
            number = named.get(number)
            if number is None:
                continue
        if number <= port <= entry.get("endPort", number):
            return True
    return False


def _lets_through(objects: list[Obj], selected: Endpoint, peer: Endpoint, flow: Flow, direction: str) -> bool:
    """Whether the policies selecting `selected` allow `flow` in `direction` (Ingress: from `peer`,
    Egress: to `peer`). Pods outside the policies' namespace are not judged (their policies are not
    here), nor pods no policy of that direction selects (not isolated)."""
    if selected.namespace is not None or not selected.pod:
        return True
    isolating = [p for p in policies_for(objects, selected.labels) if direction in _policy_types(p)]
    if not isolating:
        return True
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in isolating:
        for rule in policy["spec"].get(rules_key) or []:
            peers = rule.get(peers_key)
            if (not peers or any(_peer_selects(p, peer) for p in peers)) and _port_allowed(
                rule.get("ports"), flow.port, flow.protocol, flow.destination.ports
            ):
                return True
    return False


def reachable(objects: Iterable[Obj], flow: Flow) -> bool:
    """Whether NetworkPolicies let `flow` through: the source's egress and the destination's ingress."""
    objects = list(objects)
    return _lets_through(objects, flow.source, flow.destination, flow, "Egress") and _lets_through(
        objects, flow.destination, flow.source, flow, "Ingress"
    )


def check_flows(
    objects: Iterable[Obj], required: Iterable[Flow], forbidden: Iterable[Flow] = ()
) -> list[str]:
    """Every required flow reachable, no forbidden one."""
    objects = list(objects)
    return [
        f"{flow}: denied, but the platform needs it" for flow in required if not reachable(objects, flow)
    ] + [f"{flow}: allowed, but must be denied" for flow in forbidden if reachable(objects, flow)]
