"""docker-compose.yml, checked with the compose binary (`config` needs no engine; docs/architecture.md#offline-checks).

The model is what `docker compose config --format json` resolves, with the defaults a user gets (the
environment cleared of COMPOSE_* and PCAM_* variables; the repository's .env still applies), for the
default (CPU) stack and for `--profile gpu`.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from devstack.triton import opentelemetry_trace_settings
from services.common import ports
from services.common.healthcheck import SETTINGS
from services.common.settings import agreed_fields, field_set_by
from services.ensemble.settings import EnsembleSettings
from services.gateway.settings import GatewaySettings
from services.preprocess.settings import PreprocessSettings
from tests.unit.deploy import dockerfile as df
from tests.unit.deploy.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"
PYTHON_SERVICES = {"gateway": GatewaySettings, "preprocess": PreprocessSettings, "ensemble": EnsembleSettings}
SERVICE_PORTS = {"gateway": ports.GATEWAY, "preprocess": ports.PREPROCESS, "ensemble": ports.ENSEMBLE}
PUBLISHED = {"gateway", "grafana", "prometheus", "jaeger"}
# Long-running services Docker cannot probe, with the reason; nothing may wait for them to be healthy.
UNPROBED = {"otel-collector": "distroless image: no shell or HTTP client to run a check with"}
TRACE_CONFIG = opentelemetry_trace_settings("http://otel-collector:4318/v1/traces", rate=1)  # as devstack
PROFILES = {"default": [], "gpu": ["--profile", "gpu"]}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "PCAM_", "DOCKER_"))}
    return {**env, **extra}


def _compose(
    docker_compose: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [docker_compose, "-f", str(COMPOSE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env or _env(),
    )


@pytest.fixture(scope="module", params=list(PROFILES))
def stack(request: pytest.FixtureRequest, docker_compose: str) -> tuple[str, dict]:
    """(profile, the resolved compose model) of the default stack and of the gpu profile."""
    done = _compose(docker_compose, *PROFILES[request.param], "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    return request.param, json.loads(done.stdout)


def _services(model: dict) -> dict[str, dict]:
    return model["services"]


def _long_running(model: dict) -> dict[str, dict]:
    return {n: s for n, s in _services(model).items() if s.get("restart") != "no"}


def _triton_like(model: dict) -> set[str]:
    return {n for n, s in _long_running(model).items() if (s.get("command") or [""])[0] == "tritonserver"}


@pytest.mark.parametrize("profile", list(PROFILES))
def test_compose_config_is_valid_with_the_defaults(docker_compose: str, profile: str):
    done = _compose(docker_compose, *PROFILES[profile], "config", "-q")
    assert done.returncode == 0, done.stderr
    assert "variable is not set" not in done.stderr, done.stderr


def test_a_broken_compose_file_fails_validation(docker_compose: str, tmp_path: Path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  a:\n    image: x:1\n    depends_on: [missing]\n")
    done = subprocess.run([docker_compose, "-f", str(broken), "config", "-q"], capture_output=True, text=True,
                          timeout=120, env=_env())  # fmt: skip
    assert done.returncode != 0


def test_exactly_one_triton_per_profile(stack):
    profile, model = stack
    assert _triton_like(model) == {"default": {"triton"}, "gpu": {"triton-gpu"}}[profile]


def test_the_shell_profile_wins_over_the_dotenv_default(docker_compose: str):
    done = _compose(docker_compose, "config", "--services", env=_env(COMPOSE_PROFILES="gpu"))
    assert done.returncode == 0, done.stderr
    assert "triton-gpu" in done.stdout.split() and "triton" not in done.stdout.split()


def test_the_gpu_triton_answers_as_triton(stack):
    profile, model = stack
    ensemble = _services(model)["ensemble"]
    assert ensemble["environment"]["PCAM_ENSEMBLE_TRITON_GRPC_URL"] == f"triton:{ports.TRITON_GRPC}"
    if profile == "gpu":
        assert "triton" in _services(model)["triton-gpu"]["networks"]["default"]["aliases"]
    for name in ("triton", "triton-gpu"):
        assert ensemble["depends_on"][name] == {"condition": "service_healthy", "required": False}


def test_every_long_running_service_has_a_healthcheck(stack):
    _, model = stack
    for name, service in _long_running(model).items():
        check = service.get("healthcheck") or {}
        if name in UNPROBED:
            assert check.get("disable") is True, f"{name}: say so explicitly ({UNPROBED[name]})"
            continue
        assert check.get("test") and not check.get("disable"), f"{name}: no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_every_dependency_waits_for_health_or_completion(stack):
    _, model = stack
    services = _services(model)
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency not in UNPROBED, f"{name} waits for {dependency}, which has no healthcheck"
            one_shot = services.get(dependency, {}).get("restart") == "no"
            expected = "service_completed_successfully" if one_shot else "service_healthy"
            assert spec["condition"] == expected, f"{name} -> {dependency}: {spec}"
    gateway = services["gateway"]["depends_on"]
    assert {"preprocess", "ensemble", "redis"} <= set(gateway)


def test_services_are_hardened(stack):
    _, model = stack
    for name, service in _services(model).items():
        assert service.get("read_only") is True, f"{name}: root filesystem not read-only"
        assert service.get("cap_drop") == ["ALL"], f"{name}: capabilities not dropped"
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        user = str(service.get("user", ""))
        if service.get("restart") == "no":  # the one-shot volume chown: root with CHOWN only, no network
            assert service["cap_add"] == ["CHOWN"] and service["network_mode"] == "none", name
            continue
        assert user and user.split(":")[0] not in ("0", "root"), f"{name}: runs as {user or 'the image user'}"
        assert "/tmp" in service.get("tmpfs", []), f"{name}: no writable /tmp"
        assert service.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory"), (
            f"{name}: no limit"
        )


def test_no_image_is_latest_or_untagged(stack):
    _, model = stack
    for name, service in _services(model).items():
        image = service["image"]
        assert "$" not in image, f"{name}: {image}"
        reference = image.split("@")[0].rsplit("/", 1)[-1]
        tag = reference.partition(":")[2]
        assert tag and tag != "latest", f"{name}: {image}"


def test_only_the_user_facing_services_publish_ports_on_loopback(stack):
    _, model = stack
    published = {n for n, s in _services(model).items() if s.get("ports")}
    assert published == PUBLISHED
    for name in published:
        for port in _services(model)[name]["ports"]:
            assert port["host_ip"] == "127.0.0.1", f"{name}: {port}"


def test_the_gpu_profile_reserves_nvidia_devices(stack):
    profile, model = stack
    reserving = {}
    for name, service in _services(model).items():
        devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        if devices:
            reserving[name] = devices
    if profile == "default":
        assert reserving == {}
        return
    assert set(reserving) == {"triton-gpu"}
    (device,) = reserving["triton-gpu"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_model_repositories_are_mounted_read_only(stack):
    profile, model = stack
    services = _services(model)
    mounted = (
        {"preprocess", "ensemble", "triton"}
        if profile == "default"
        else {"preprocess", "ensemble", "triton-gpu"}
    )
    for name in mounted:
        (volume,) = [v for v in services[name]["volumes"] if v["target"] == "/models"]
        assert volume["read_only"] is True, name
        expected = "model_repository_gpu" if name == "triton-gpu" else "model_repository"
        assert Path(volume["source"]) == ROOT / expected, name


def test_triton_traces_to_the_collector_and_serves_the_repository(stack):
    _, model = stack
    services = _services(model)
    for name in _triton_like(model):
        command = services[name]["command"]
        configs = [command[k + 1] for k, arg in enumerate(command[:-1]) if arg == "--trace-config"]
        assert configs == TRACE_CONFIG, name
        for flag in ("--model-repository=/models", "--model-control-mode=poll", "--repository-poll-secs=5",
                     "--strict-readiness=true"):  # fmt: skip
            assert flag in command, (name, flag)
    collector = yaml.safe_load((ROOT / "docker" / "otel-collector" / "config.yaml").read_text())
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    assert collector["service"]["pipelines"]["traces"]["exporters"] == ["otlp/jaeger"]
    assert collector["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"
    mount = next(v for v in services["otel-collector"]["volumes"] if v["target"].endswith("config.yaml"))
    assert Path(mount["source"]) == ROOT / "docker" / "otel-collector" / "config.yaml"
    assert f"--config={mount['target']}" in services["otel-collector"]["command"]


def test_the_services_export_traces_to_the_collector(stack):
    _, model = stack
    for name in PYTHON_SERVICES:
        env = _services(model)[name]["environment"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
        assert env["OTEL_SERVICE_NAME"] == f"pcam-{name}"


def test_service_environment_names_real_settings(stack):
    """extra="ignore" would swallow a misspelt PCAM_<SERVICE>_<FIELD> (or PCAM_<FIELD> of a setting
    services must agree on): every one must set a field of that service."""
    _, model = stack
    for name, settings in PYTHON_SERVICES.items():
        for key in _services(model)[name].get("environment", {}):
            if key.startswith("PCAM_"):
                assert field_set_by(settings, key), (name, key)


def test_one_shell_variable_sets_an_agreed_setting_in_every_service_that_has_it(docker_compose: str):
    """PCAM_MAX_IMAGES set once reaches gateway and preprocess, which must agree on it, and no other."""
    done = _compose(docker_compose, "config", "--format", "json", env=_env(PCAM_MAX_IMAGES="12"))
    assert done.returncode == 0, done.stderr
    services = _services(json.loads(done.stdout))
    for name, settings in PYTHON_SERVICES.items():
        environment = services[name].get("environment", {})
        has_it = "max_images" in agreed_fields(settings)
        assert (environment.get("PCAM_MAX_IMAGES") == "12") is has_it, name
        assert has_it is (name in ("gateway", "preprocess"))


def test_redis_requires_the_password_the_gateway_reads(stack):
    _, model = stack
    services = _services(model)
    redis, gateway = services["redis"], services["gateway"]
    for service in (redis, gateway):
        assert [s["source"] for s in service["secrets"]] == ["redis_password"]
    assert "requirepass" in " ".join(redis["command"]) and "/run/secrets/redis_password" in " ".join(
        redis["command"]
    )
    assert gateway["environment"]["PCAM_GATEWAY_REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password"
    assert gateway["environment"]["PCAM_GATEWAY_REDIS_URL"] == f"redis://redis:{ports.REDIS}/0"
    assert "redis_password_file" in GatewaySettings.model_fields
    assert Path(model["secrets"]["redis_password"]["file"]).is_file()


def test_prometheus_evaluates_the_shared_rules_and_scrapes_everything(stack):
    profile, model = stack
    prometheus = _services(model)["prometheus"]
    volumes = {Path(v["source"]): v for v in prometheus["volumes"] if v["type"] == "bind"}
    rules = volumes[ROOT / "deploy" / "prometheus" / "pcam-rules.yml"]
    config_mount = volumes[ROOT / "docker" / "prometheus" / "prometheus.yml"]
    assert rules["read_only"] and config_mount["read_only"]
    assert f"--config.file={config_mount['target']}" in prometheus["command"]
    config = yaml.safe_load((ROOT / "docker" / "prometheus" / "prometheus.yml").read_text())
    assert any(Path(rules["target"]).match(pattern) for pattern in config["rule_files"])
    targets = {t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    expected = {f"{name}:{port}" for name, port in SERVICE_PORTS.items()} | {f"triton:{ports.TRITON_METRICS}"}
    assert expected <= targets
    hosts = {t.split(":")[0] for t in targets} - {"127.0.0.1", "localhost"}
    names = set(_services(model)) | {a for s in _services(model).values() for a in _aliases(s)}
    assert hosts <= names, f"{profile}: scrape targets without a service: {hosts - names}"


def _aliases(service: dict) -> list[str]:
    return [
        a
        for network in (service.get("networks") or {}).values()
        if network
        for a in network.get("aliases", [])
    ]


def test_grafana_provisions_the_shared_dashboards_and_prometheus(stack):
    _, model = stack
    grafana = _services(model)["grafana"]
    volumes = {Path(v["source"]): v for v in grafana["volumes"] if v["type"] == "bind"}
    dashboards = volumes[ROOT / "deploy" / "grafana" / "dashboards"]
    assert dashboards["read_only"]
    provisioning = ROOT / "docker" / "grafana" / "provisioning"
    for kind in ("datasources", "dashboards"):
        assert volumes[provisioning / kind]["target"] == f"/etc/grafana/provisioning/{kind}"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "pcam.yml").read_text())["providers"]
    assert provider["options"]["path"] == dashboards["target"]
    sources = yaml.safe_load((provisioning / "datasources" / "pcam.yml").read_text())["datasources"]
    (default,) = [s for s in sources if s.get("isDefault")]
    assert default["type"] == "prometheus" and default["url"] == "http://prometheus:9090"
    # The dashboards choose their Prometheus by a `datasource` variable: the default one above.
    for path in sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert (
            variables["datasource"]["type"] == "datasource"
            and variables["datasource"]["query"] == "prometheus"
        )
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}", (path.name, panel["title"])


def test_python_services_are_built_from_their_dockerfile_target(stack):
    _, model = stack
    dockerfile = df.load(ROOT / "docker" / "services.Dockerfile")
    for name in PYTHON_SERVICES:
        service = _services(model)[name]
        assert service["build"]["dockerfile"] == "docker/services.Dockerfile"
        assert service["build"]["target"] == name
        assert service["image"] == f"ghcr.io/pcam-platform/pcam-{name}:0.1.0"
        stage = dockerfile.stage(name)
        assert service["healthcheck"]["test"] == [
            "CMD",
            *dockerfile.effective(stage, "HEALTHCHECK").exec_form(),
        ]
        command = service.get("command") or dockerfile.effective(stage, "CMD").exec_form()
        assert command == ["python", "-m", f"services.{name}"]
        assert name in SETTINGS


def test_the_cpu_triton_runs_its_image_command_plus_tracing(docker_compose: str):
    done = _compose(docker_compose, "config", "--format", "json")
    triton = json.loads(done.stdout)["services"]["triton"]
    dockerfile = df.load(ROOT / "docker" / "triton-cpu.Dockerfile")
    (final,) = dockerfile.final_stages()
    image_command = dockerfile.effective(final, "CMD").exec_form()
    assert triton["command"][: len(image_command)] == image_command
    assert triton["build"]["dockerfile"] == "docker/triton-cpu.Dockerfile"
    assert triton["healthcheck"]["test"] == ["CMD", *dockerfile.effective(final, "HEALTHCHECK").exec_form()]
    assert triton["user"] == dockerfile.effective(final, "USER").args


def test_grafana_reads_its_admin_password_from_a_secret_file(stack):
    _, model = stack
    grafana = _services(model)["grafana"]
    environment = grafana["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in environment
    assert environment["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert [s["source"] for s in grafana["secrets"]] == ["grafana_admin_password"]
    assert (
        Path(model["secrets"]["grafana_admin_password"]["file"]) == ROOT / "docker/grafana/dev-admin-password"
    )
