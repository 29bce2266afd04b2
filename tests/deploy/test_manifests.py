"""Deployment files: rendered Kubernetes manifests, Dockerfile, compose file and example config.

The Kubernetes tests render each kustomization with ``kubectl kustomize``; they skip when no kubectl
is found (``.ci/validate-deploy.sh`` installs one into ``.venv-tools/``). Schema validation itself is
the script's job; these tests assert the properties we rely on (security, probes, network limits).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import CacheSettings, FhirSettings, Issuer, PhenoconversionSettings, Settings, SmartSettings

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZATIONS = ["k8s/base", "k8s/overlays/production", "k8s/overlays/dev"]
API_LABELS = {"app.kubernetes.io/name": "pgx-cds", "app.kubernetes.io/component": "api"}
REDIS_LABELS = {"app.kubernetes.io/name": "pgx-cds-redis"}
SERVICE_PORT = 8080


# --------------------------------------------------------------------------- helpers


def _kubectl() -> str | None:
    """kubectl to render with: $KUBECTL, then the tools venv, then the project venv, then PATH."""
    candidates = [
        os.environ.get("KUBECTL"),
        str(ROOT / ".venv-tools" / "bin" / "kubectl"),
        str(ROOT / ".venv" / "bin" / "kubectl"),
    ]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    return shutil.which("kubectl")


_RENDERED: dict[str, list[dict[str, Any]]] = {}


def _render(kdir: str) -> list[dict[str, Any]]:
    if kdir not in _RENDERED:
        kubectl = _kubectl()
        if kubectl is None:
            pytest.skip("kubectl not found (run .ci/validate-deploy.sh to install it into .venv-tools/)")
        proc = subprocess.run(
            [kubectl, "kustomize", str(ROOT / kdir)], capture_output=True, text=True, timeout=120, check=False
        )
        assert proc.returncode == 0, f"kubectl kustomize {kdir} failed: {proc.stderr}"
        _RENDERED[kdir] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return _RENDERED[kdir]


def _one(docs: list[dict[str, Any]], kind: str, name_prefix: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name_prefix)]
    # generated objects carry a hash suffix: prefer the exact name
    exact = [d for d in found if d["metadata"]["name"] == name_prefix]
    found = exact or found
    assert len(found) == 1, f"expected one {kind} {name_prefix}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def _workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}]


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def _api(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(docs, "Deployment", "pgx-cds")


def _api_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = [c for c in _api(docs)["spec"]["template"]["spec"]["containers"] if c["name"] == "pgx-cds"]
    return c


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert not selector.get("matchExpressions"), "tests only understand matchLabels"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("PGX_CDS_"):
            monkeypatch.delenv(key)


@pytest.fixture(params=KUSTOMIZATIONS)
def docs(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return _render(request.param)


# --------------------------------------------------------------------------- pods


def test_every_kind_expected_is_rendered(docs: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in docs}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "NetworkPolicy",
        "StatefulSet",
        "ServiceAccount",
    } <= kinds


def test_pods_run_non_root_with_read_only_root_and_no_privileges(docs: list[dict[str, Any]]) -> None:
    workloads = _workloads(docs)
    assert {w["metadata"]["name"] for w in workloads} == {"pgx-cds", "pgx-cds-redis"}
    for w in workloads:
        pod = w["spec"]["template"]["spec"]
        name = w["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), name
        for c in _containers(w):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
            assert not sc["capabilities"].get("add"), (name, c["name"])
            assert sc.get("privileged", False) is False, (name, c["name"])
            assert sc.get("runAsUser", pod["securityContext"].get("runAsUser", 0)) != 0, (name, c["name"])


def test_api_runs_as_uid_10001_with_tmp_on_an_emptydir(docs: list[dict[str, Any]]) -> None:
    pod = _api(docs)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["runAsGroup"] == 10001
    mounts = {m["mountPath"]: m["name"] for m in _api_container(docs)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_api_probes_hit_the_right_paths_on_the_service_port(docs: list[dict[str, Any]]) -> None:
    c = _api_container(docs)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": SERVICE_PORT}
    expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert ports.get(get["port"], get["port"]) == SERVICE_PORT, probe
    # the startup probe gives the process time to load knowledge before liveness applies
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30


def test_every_container_sets_cpu_and_memory_requests_and_limits(docs: list[dict[str, Any]]) -> None:
    for w in _workloads(docs):
        for c in _containers(w):
            res = c["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res[kind]), (w["metadata"]["name"], c["name"], kind)


def test_no_image_uses_latest_or_no_tag(docs: list[dict[str, Any]]) -> None:
    images = [c["image"] for w in _workloads(docs) for c in _containers(w)]
    assert len(images) == 2
    for image in images:
        if "@sha256:" in image:
            continue
        last = image.rsplit("/", 1)[-1]
        assert ":" in last, f"{image} has no tag"
        assert last.split(":", 1)[1] != "latest", image


def test_api_config_file_comes_from_the_mounted_configmap(docs: list[dict[str, Any]]) -> None:
    c = _api_container(docs)
    env = _env(c)
    config_file = Path(env["PGX_CDS_CONFIG_FILE"]["value"])
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    mount = mounts[str(config_file.parent)]
    assert mount["readOnly"] is True
    volumes = {v["name"]: v for v in _api(docs)["spec"]["template"]["spec"]["volumes"]}
    cm_name = volumes[mount["name"]]["configMap"]["name"]
    cm = _one(docs, "ConfigMap", cm_name)
    assert config_file.name in cm["data"]
    assert env["PGX_CDS_WORKERS"]["value"] == "1"


def test_issuers_and_log_salt_come_from_a_secret_never_committed(docs: list[dict[str, Any]]) -> None:
    env = _env(_api_container(docs))
    for var, key in (("PGX_CDS_ISSUERS", "issuers.json"), ("PGX_CDS_LOG_SALT", "log-salt")):
        assert "value" not in env[var], var
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert ref["name"].startswith("pgx-cds-secrets") and ref["key"] == key


@pytest.mark.parametrize("kdir", ["k8s/base", "k8s/overlays/production"])
def test_base_and_production_contain_no_secret_objects(kdir: str) -> None:
    assert [d["metadata"]["name"] for d in _render(kdir) if d["kind"] == "Secret"] == []


def test_configmap_settings_are_valid_and_hold_no_secrets(
    docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_env(monkeypatch)
    cm = _one(docs, "ConfigMap", "pgx-cds-config")
    data = yaml.safe_load(cm["data"]["config.yaml"])
    assert data == yaml.safe_load((ROOT / "k8s/base/config.yaml").read_text(encoding="utf-8"))
    assert not {"issuers", "log_salt", "redis_url"} & set(data), "these come from env / Secret"
    settings = Settings(**data)
    assert settings.profile == "production"
    assert settings.fhir.allow_http is False


def test_service_account_mounts_no_token(docs: list[dict[str, Any]]) -> None:
    sa = _one(docs, "ServiceAccount", "pgx-cds")
    assert sa["automountServiceAccountToken"] is False
    assert _api(docs)["spec"]["template"]["spec"]["serviceAccountName"] == "pgx-cds"


def test_api_pods_spread_over_nodes(docs: list[dict[str, Any]]) -> None:
    pod = _api(docs)["spec"]["template"]["spec"]
    pod_labels = _api(docs)["spec"]["template"]["metadata"]["labels"]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert _selects(term["podAffinityTerm"]["labelSelector"], pod_labels)
    keys = {t["topologyKey"] for t in pod["topologySpreadConstraints"]}
    assert "topology.kubernetes.io/zone" in keys
    for t in pod["topologySpreadConstraints"]:
        assert _selects(t["labelSelector"], pod_labels)


# --------------------------------------------------------------------------- service, HPA, PDB


def test_service_selects_api_pods_on_port_8080(docs: list[dict[str, Any]]) -> None:
    svc = _one(docs, "Service", "pgx-cds")
    pod_labels = _api(docs)["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    assert svc["spec"]["selector"] == API_LABELS
    (port,) = svc["spec"]["ports"]
    assert port["port"] == SERVICE_PORT and port["targetPort"] == "http"
    redis_svc = _one(docs, "Service", "pgx-cds-redis")
    assert redis_svc["spec"]["clusterIP"] == "None"  # headless, for the StatefulSet


def test_pdb_protects_the_api_pods(docs: list[dict[str, Any]]) -> None:
    pdb = _one(docs, "PodDisruptionBudget", "pgx-cds")
    assert pdb["apiVersion"] == "policy/v1"
    assert _selects(pdb["spec"]["selector"], _api(docs)["spec"]["template"]["metadata"]["labels"])
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable", 0) >= 1


def test_hpa_scales_the_deployment_on_cpu(docs: list[dict[str, Any]]) -> None:
    hpa = _one(docs, "HorizontalPodAutoscaler", "pgx-cds")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "pgx-cds"}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


# --------------------------------------------------------------------------- NetworkPolicy


def _policy_for(docs: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, Any]:
    (pol,) = [d for d in docs if d["kind"] == "NetworkPolicy" and _selects(d["spec"]["podSelector"], labels)]
    return pol


def test_api_ingress_only_from_ingress_namespace_on_service_port(docs: list[dict[str, Any]]) -> None:
    pol = _policy_for(docs, _api(docs)["spec"]["template"]["metadata"]["labels"])
    assert set(pol["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    (rule,) = pol["spec"]["ingress"]
    (peer,) = rule["from"]
    assert set(peer) == {"namespaceSelector"}
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ingress-nginx"}
    assert rule["ports"] == [{"protocol": "TCP", "port": SERVICE_PORT}]


def test_api_egress_limited_to_redis_dns_and_https(docs: list[dict[str, Any]]) -> None:
    pol = _policy_for(docs, _api(docs)["spec"]["template"]["metadata"]["labels"])
    allowed: set[tuple[str, int]] = set()
    for rule in pol["spec"]["egress"]:
        assert rule.get("to") and rule.get("ports"), f"egress rule open to everything: {rule}"
        ports = {(p["protocol"], p["port"]) for p in rule["ports"]}
        allowed |= ports
        for peer in rule["to"]:
            if "ipBlock" in peer:
                assert peer["ipBlock"]["cidr"] not in {"0.0.0.0/0", "::/0"}
                assert ports == {("TCP", 443)}, "external peers only on HTTPS"
            elif ("TCP", 6379) in ports:
                assert _selects(peer["podSelector"], REDIS_LABELS)
            else:
                assert ports == {("UDP", 53), ("TCP", 53)}
                assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
                assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert allowed == {("TCP", 6379), ("UDP", 53), ("TCP", 53), ("TCP", 443)}


def _redis_args(args: list[str]) -> dict[str, str]:
    return {args[i]: args[i + 1] for i in range(0, len(args) - 1) if args[i].startswith("--")}


def test_redis_keeps_feedback_stream_durable(docs: list[dict[str, Any]]) -> None:
    """Feedback is a Redis stream without TTL: persisted (AOF on a PVC) and never evicted."""
    redis = _one(docs, "StatefulSet", "pgx-cds-redis")
    (c,) = redis["spec"]["template"]["spec"]["containers"]
    args = _redis_args(c["args"])
    assert args["--appendonly"] == "yes"
    assert args["--maxmemory-policy"] == "volatile-lru"  # evicts only keys with a TTL (caches)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert mounts[claim["metadata"]["name"]] == "/data"
    assert c["image"].startswith("redis:7")


def test_api_pod_disables_service_links(docs: list[dict[str, Any]]) -> None:
    """Service links would inject PGX_CDS_PORT=tcp://... and break the PGX_CDS_ settings."""
    assert _api(docs)["spec"]["template"]["spec"]["enableServiceLinks"] is False
    assert _env(_api_container(docs))["PGX_CDS_PORT"]["value"] == str(SERVICE_PORT)


def test_redis_reachable_only_from_api_pods_and_has_no_egress(docs: list[dict[str, Any]]) -> None:
    redis = _one(docs, "StatefulSet", "pgx-cds-redis")
    pol = _policy_for(docs, redis["spec"]["template"]["metadata"]["labels"])
    assert set(pol["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert not pol["spec"].get("egress")
    (rule,) = pol["spec"]["ingress"]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"} and peer["podSelector"]["matchLabels"] == API_LABELS
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    assert redis["spec"]["serviceName"] == "pgx-cds-redis"


# --------------------------------------------------------------------------- overlays


def test_production_overlay_pins_image_sizes_and_takes_redis_url_from_secret() -> None:
    docs = _render("k8s/overlays/production")
    assert {d["metadata"].get("namespace") for d in docs} == {"pgx-cds"}
    dep = _api(docs)
    assert dep["spec"]["replicas"] == 3
    c = _api_container(docs)
    assert c["image"] == "registry.example.org/pgx/pgx-cds:0.1.0"
    assert c["resources"]["requests"] == {"cpu": "500m", "memory": "512Mi"}
    redis_url = _env(c)["PGX_CDS_REDIS_URL"]
    assert "value" not in redis_url
    assert redis_url["valueFrom"]["secretKeyRef"] == {"name": "pgx-cds-redis", "key": "url"}
    hpa = _one(docs, "HorizontalPodAutoscaler", "pgx-cds")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    (redis,) = _one(docs, "StatefulSet", "pgx-cds-redis")["spec"]["template"]["spec"]["containers"]
    i = redis["args"].index("--requirepass")
    assert redis["args"][i + 1] == "$(REDIS_PASSWORD)"
    assert _env(redis)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "pgx-cds-redis", "key": "password"}
    assert _env(redis)["REDISCLI_AUTH"]["valueFrom"]["secretKeyRef"]["name"] == "pgx-cds-redis"


def test_base_uses_in_cluster_redis() -> None:
    env = _env(_api_container(_render("k8s/base")))
    assert env["PGX_CDS_REDIS_URL"]["value"] == "redis://pgx-cds-redis:6379/0"


def test_dev_overlay_placeholder_secret_is_a_valid_dev_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    docs = _render("k8s/overlays/dev")
    secret = _one(docs, "Secret", "pgx-cds-secrets")
    env = _env(_api_container(docs))
    ref = env["PGX_CDS_ISSUERS"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]  # generated name with hash, rewired by kustomize
    issuers = json.loads(base64.b64decode(secret["data"]["issuers.json"]))
    salt = base64.b64decode(secret["data"]["log-salt"]).decode()
    assert "placeholder" in salt
    assert env["PGX_CDS_PROFILE"]["value"] == "dev"
    assert env["PGX_CDS_TRUST_SANDBOX"]["value"] == "true"
    settings = Settings(profile="dev", trust_sandbox=True, issuers=issuers, log_salt=salt)
    assert [i.iss for i in settings.issuers] == ["https://ehr.dev.example.org"]
    assert settings.dev_mode is False
    with pytest.raises(ValueError, match="trust_sandbox"):
        Settings(profile="production", trust_sandbox=True, issuers=issuers)


# --------------------------------------------------------------------------- Dockerfile


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "docker/Dockerfile").read_text(encoding="utf-8")
    logical = re.sub(r"\\\n", " ", text)
    out = []
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        out.append((op.upper(), " ".join(rest.split())))
    return out


def _final_stage() -> list[tuple[str, str]]:
    instr = _dockerfile_instructions()
    last_from = max(i for i, (op, _) in enumerate(instr) if op == "FROM")
    return instr[last_from:]


def test_dockerfile_is_multistage_on_python_311_slim() -> None:
    froms = [arg for op, arg in _dockerfile_instructions() if op == "FROM"]
    assert froms == ["python:3.11-slim AS builder", "python:3.11-slim"]


def test_dockerfile_final_stage_runs_pgx_cds_serve_as_uid_10001() -> None:
    final = _final_stage()
    ops = {op: arg for op, arg in final}  # last one wins, like Docker
    assert ops["USER"] == "10001:10001"
    assert ops["EXPOSE"] == str(SERVICE_PORT)
    cmd = json.loads(ops["CMD"])
    assert cmd[:2] == ["/bin/sh", "-c"]
    argv = shlex.split(cmd[2])
    assert argv[:6] == ["exec", "pgx-cds", "serve", "--host", "0.0.0.0", "--port"]
    assert argv[argv.index("--workers") + 1] == "${PGX_CDS_WORKERS:-1}"
    assert argv[argv.index("--port") + 1] == "${PGX_CDS_PORT:-8080}"


def test_dockerfile_healthcheck_uses_python_against_healthz() -> None:
    (hc,) = [arg for op, arg in _final_stage() if op == "HEALTHCHECK"]
    cmd = json.loads(hc[hc.index("CMD") + 3 :].strip())
    assert cmd[:2] == ["python", "-c"]
    assert "/healthz" in cmd[2] and "'8080'" in cmd[2]
    compile(cmd[2], "<healthcheck>", "exec")  # valid Python


def test_dockerfile_final_stage_ships_only_venv_cards_and_profiles() -> None:
    final = _final_stage()
    copies = [arg for op, arg in final if op == "COPY"]
    assert copies == [
        "--from=builder /opt/venv /opt/venv",
        "cards/ /app/cards/",
        "fhir_profiles/ /app/fhir_profiles/",
    ]
    env_text = " ".join(arg for op, arg in final if op == "ENV")
    assert "PGX_CDS_KNOWLEDGE_DIR=/app/cards" in env_text
    assert "PYTHONDONTWRITEBYTECODE=1" in env_text
    runs = " ".join(arg for op, arg in final if op == "RUN")
    for tool in ("apt-get", "gcc", "pip install", "build-essential", "curl"):
        assert tool not in runs, tool
    assert any(op == "LABEL" and "org.opencontainers.image.title" in arg for op, arg in final)


def test_dockerignore_allows_every_copied_source() -> None:
    lines = [
        ln.strip()
        for ln in (ROOT / "docker/Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*"  # allow-list: nothing else (venvs, .git, secrets) reaches the build
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    sources = []
    for op, arg in _dockerfile_instructions():
        if op == "COPY" and not arg.startswith("--from"):
            sources += arg.split()[:-1]
    assert sources, "no COPY found"
    for src in sources:
        assert src.rstrip("/").split("/")[0] in allowed, src
        assert (ROOT / src).exists() or src == "README.md", src  # README.md is the lead's file


# --------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker/compose.yaml").read_text(encoding="utf-8"))


def test_compose_builds_our_dockerfile_and_uses_its_command(compose: dict[str, Any]) -> None:
    app = compose["services"]["pgx-cds"]
    build_root = (ROOT / "docker" / app["build"]["context"]).resolve()
    assert build_root == ROOT
    assert (build_root / app["build"]["dockerfile"]).resolve() == ROOT / "docker/Dockerfile"
    assert "command" not in app and "entrypoint" not in app  # the image's CMD: pgx-cds serve
    assert app["ports"] == [f"127.0.0.1:{SERVICE_PORT}:{SERVICE_PORT}"]
    assert app["user"] == "10001:10001"
    assert app["read_only"] is True and app["tmpfs"] == ["/tmp"]
    assert app["cap_drop"] == ["ALL"]


def test_compose_healthchecks(compose: dict[str, Any]) -> None:
    app, redis = compose["services"]["pgx-cds"], compose["services"]["redis"]
    test = app["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    assert f"http://127.0.0.1:{SERVICE_PORT}/healthz" in test[3]
    compile(test[3], "<healthcheck>", "exec")
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert app["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert redis["image"].startswith("redis:7")
    assert "ports" not in redis
    args = _redis_args(redis["command"][1:])
    assert args["--appendonly"] == "yes" and args["--maxmemory-policy"] == "volatile-lru"
    assert [v.split(":")[1] for v in redis["volumes"]] == ["/data"]


def test_compose_wires_redis_and_the_example_config(compose: dict[str, Any]) -> None:
    env = compose["services"]["pgx-cds"]["environment"]
    assert env["PGX_CDS_REDIS_URL"] == "redis://redis:6379/0"
    assert env["PGX_CDS_WORKERS"] == "${PGX_CDS_WORKERS:-1}"
    mounts = {}
    for v in compose["services"]["pgx-cds"]["volumes"]:
        src, dst, mode = v.split(":")
        mounts[dst] = (src, mode)
    src, mode = mounts[env["PGX_CDS_CONFIG_FILE"]]
    assert mode == "ro"
    assert (ROOT / "docker" / src).resolve() == ROOT / "docker/config.example.yaml"


# --------------------------------------------------------------------------- example config


def _example() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker/config.example.yaml").read_text(encoding="utf-8"))


def test_example_config_is_valid_and_not_dev_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    data = _example()
    assert data["knowledge_dir"] == "/app/cards"  # the image's path; use the repo's cards here
    data["knowledge_dir"] = str(ROOT / "cards")
    settings = Settings(**data)
    assert settings.dev_mode is False
    assert settings.profile == "production"
    assert settings.redis_url == "redis://redis:6379/0"
    assert str(settings.issuers[0].jwks_url) == "https://ehr.example.org/.well-known/jwks.json"


def test_example_config_documents_every_setting() -> None:
    data = _example()
    assert set(data) == set(Settings.model_fields)
    assert set(data["fhir"]) == set(FhirSettings.model_fields)
    assert set(data["cache"]) == set(CacheSettings.model_fields)
    assert set(data["phenoconversion"]) == set(PhenoconversionSettings.model_fields)
    assert set(data["smart"]) == set(SmartSettings.model_fields)
    issuer_keys = set().union(*(set(i) for i in data["issuers"]))
    assert issuer_keys == set(Issuer.model_fields)
