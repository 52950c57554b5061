"""deploy/ stays true to the code: the image, and the Kubernetes manifests of worker, scheduler and api.

No container engine or cluster runs where Herald is developed, so this is what checks them: every
container runs a real `herald` sub-command with options it has, every variable is a real setting
(and the ConfigMap and Secret together parse as Settings), every probe hits the port the process
listens on, mounted files are where the settings say, and the image's last stage is non-root with
ENTRYPOINT herald. Each check is a function returning its problems; the `*_catches_*` tests break a
copy of the manifests and expect the check to say so.
"""
from __future__ import annotations

import copy
import ipaddress
import json
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import typer.main
import yaml
from pydantic import BaseModel, TypeAdapter

from infra.settings import Settings
from infra.tools.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
IMAGE = "herald"  # the image name the manifests use (kustomization.yaml maps it to a registry)


# --- loading --------------------------------------------------------------------------------------

def load() -> list[dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs: list[dict] = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


@pytest.fixture()
def docs() -> list[dict]:
    return load()


def of_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def deployment(docs: list[dict], component: str) -> dict:
    found = [d for d in of_kind(docs, "Deployment").values()
             if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == component]
    assert len(found) == 1, f"one Deployment of component {component!r}, found {len(found)}"
    return found[0]


def containers(dep: dict, init: bool = True) -> list[dict]:
    pod = dep["spec"]["template"]["spec"]
    return [*(pod.get("initContainers", []) if init else []), *pod["containers"]]


def main_container(dep: dict) -> dict:
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c


def env_of(docs: list[dict], container: dict) -> dict[str, str]:
    """The variables a container gets: its envFrom ConfigMaps and Secrets, then its env list."""
    maps, secrets = of_kind(docs, "ConfigMap"), of_kind(docs, "Secret")
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        if "configMapRef" in src:
            env.update(maps[src["configMapRef"]["name"]].get("data", {}))
        if "secretRef" in src:
            s = secrets[src["secretRef"]["name"]]
            env.update(s.get("stringData", {}))
            env.update(s.get("data", {}))
    env.update({e["name"]: e.get("value", "") for e in container.get("env", [])})
    return env


def setting_names() -> set[str]:
    """Every HERALD_* variable Settings reads (nested sections as NAME__FIELD, or whole as NAME)."""
    names = set()
    for name, field in Settings.model_fields.items():
        names.add(f"HERALD_{name.upper()}")
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            names |= {f"HERALD_{name}__{s}".upper() for s in sub.model_fields}
    return names


def effective(env: dict[str, str], variable: str):
    """The value a setting takes in a container: from its environment, else the Settings default."""
    parts = variable.removeprefix("HERALD_").lower().split("__")
    field = Settings.model_fields[parts[0]]
    if variable in env:
        annotation = field.annotation.model_fields[parts[1]].annotation if len(parts) == 2 else field.annotation
        return TypeAdapter(annotation).validate_python(env[variable])
    default = field.get_default(call_default_factory=True)
    return getattr(default, parts[1]) if len(parts) == 2 else default


def section_field(section: str, suffix: str) -> str | None:
    """The variable of the first field of a settings section whose name ends with ``suffix`` (HERALD_WORKER__HEALTH_PORT)."""
    field = Settings.model_fields.get(section)
    sub = field.annotation if field else None
    if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
        return None
    for name in sub.model_fields:
        if name == suffix or name.endswith("_" + suffix):
            return f"HERALD_{section}__{name}".upper()
    return None


def port_number(container: dict, port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    return None


# --- commands -------------------------------------------------------------------------------------

def resolve(args: list[str]):
    """The `herald` command ``args`` run and the parsed parameters, or a problem."""
    cmd = typer.main.get_command(app)
    path = ["herald"]
    rest = list(args)
    while hasattr(cmd, "commands"):
        if not rest or rest[0].startswith("-"):
            return None, f"`{' '.join(path)}` needs a sub-command, got {args}"
        name = rest.pop(0)
        if name not in cmd.commands:
            return None, f"`{' '.join(path)} {name}` is not a herald command (args {args})"
        cmd = cmd.commands[name]
        path.append(name)
    try:
        ctx = cmd.make_context(" ".join(path), rest)
    except Exception as exc:  # noqa: BLE001 - click's usage errors: an unknown option, a bad value
        return None, f"`{' '.join(path)}` does not take {rest}: {exc}"
    return (path[1:], ctx.params), None


def check_commands(docs: list[dict]) -> list[str]:
    problems = []
    for dep in of_kind(docs, "Deployment").values():
        for c in containers(dep):
            where = f"{dep['metadata']['name']}/{c['name']}"
            if c.get("image", "").split(":")[0] != IMAGE:
                problems.append(f"{where}: image {c.get('image')!r} is not {IMAGE!r}")
            if c.get("command") not in (None, ["herald"]):
                problems.append(f"{where}: command {c['command']} replaces the image's ENTRYPOINT herald")
            _, problem = resolve([str(a) for a in c.get("args", [])])
            if problem:
                problems.append(f"{where}: {problem}")
    return problems


def test_every_container_runs_a_real_herald_command(docs):
    assert not check_commands(docs)
    for component, command in (("worker", ["worker"]), ("scheduler", ["scheduler"]), ("api", ["api"])):
        resolved, _ = resolve(main_container(deployment(docs, component))["args"])
        assert resolved[0] == command


def test_the_command_check_catches_a_wrong_command_or_option(docs):
    for bad in (["workers"], ["db"], ["scheduler", "--metric-port", "9109"], ["scheduler", "--metrics-port", "x"]):
        broken = copy.deepcopy(docs)
        main_container(deployment(broken, "scheduler"))["args"] = bad
        assert check_commands(broken), bad
    broken = copy.deepcopy(docs)
    main_container(deployment(broken, "worker"))["command"] = ["python", "-m", "streams"]
    assert check_commands(broken)


# --- environment ----------------------------------------------------------------------------------

def check_env_names(docs: list[dict]) -> list[str]:
    valid = setting_names()
    problems = []
    for kind in ("ConfigMap", "Secret"):
        for name, d in of_kind(docs, kind).items():
            used_as_env = any(src.get("configMapRef" if kind == "ConfigMap" else "secretRef", {}).get("name") == name
                              for dep in of_kind(docs, "Deployment").values() for c in containers(dep)
                              for src in c.get("envFrom", []))
            values = {**d.get("data", {}), **d.get("stringData", {})}
            for key, value in values.items():
                if used_as_env and key not in valid:
                    problems.append(f"{kind} {name}: {key} is not a Herald setting")
                if not isinstance(value, str):
                    problems.append(f"{kind} {name}: {key} is {value!r}, not a string (quote it)")
    for dep in of_kind(docs, "Deployment").values():
        for c in containers(dep):
            for e in c.get("env", []):
                if e["name"] not in valid:
                    problems.append(f"{dep['metadata']['name']}/{c['name']}: env {e['name']} is not a Herald setting")
    return problems


def test_every_variable_is_a_setting(docs):
    assert not check_env_names(docs)


def test_the_variable_check_catches_a_misspelt_name_or_a_number(docs):
    broken = copy.deepcopy(docs)
    of_kind(broken, "ConfigMap")["herald-config"]["data"]["HERALD_KAFKA_SECURITY_PROTOCOL"] = "SASL_SSL"  # one _ short
    assert check_env_names(broken)
    broken = copy.deepcopy(docs)
    of_kind(broken, "Secret")["herald-secrets"]["stringData"]["HERALD_DB_URL"] = "postgresql://x"
    assert check_env_names(broken)
    broken = copy.deepcopy(docs)
    of_kind(broken, "ConfigMap")["herald-config"]["data"]["HERALD_PARTITIONS"] = 12
    assert check_env_names(broken)
    broken = copy.deepcopy(docs)
    main_container(deployment(broken, "api"))["env"] = [{"name": "HERALD_API__RATELIMIT", "value": "5"}]
    assert check_env_names(broken)


def test_the_configmap_and_secret_parse_as_settings(docs, monkeypatch):
    import os

    for key in [k for k in os.environ if k.startswith("HERALD_")]:
        monkeypatch.delenv(key)
    for dep in of_kind(docs, "Deployment").values():
        for c in containers(dep):
            with monkeypatch.context() as m:
                for key, value in env_of(docs, c).items():
                    m.setenv(key, value)
                s = Settings()  # a bad value raises here, naming the variable
                assert s.kafka.security_protocol == "SASL_SSL" and s.kafka.sasl_password_file is not None


def test_every_setting_the_deploy_docs_name_is_set():
    cm = of_kind(load(), "ConfigMap")["herald-config"]["data"]
    for variable in ("HERALD_KAFKA_BOOTSTRAP", "HERALD_KAFKA__SECURITY_PROTOCOL", "HERALD_KAFKA__SASL_MECHANISM",
                     "HERALD_KAFKA__SASL_USERNAME", "HERALD_KAFKA__SASL_PASSWORD_FILE", "HERALD_KAFKA__SSL_CA_FILE",
                     "HERALD_PARTITIONS"):
        assert variable in cm, variable
    secret = of_kind(load(), "Secret")["herald-secrets"]["stringData"]
    assert {"HERALD_DATABASE_URL", "HERALD_REDIS_URL"} <= set(secret)
    assert not {k for k in cm if re.search(r"PASSWORD$|TOKEN$|API_KEY$|DATABASE_URL|REDIS_URL", k)}, "a secret in the ConfigMap"


# --- mounted files --------------------------------------------------------------------------------

def check_files(docs: list[dict]) -> list[str]:
    """Every *_FILE setting a container gets points into a volume it mounts, at a key the Secret has."""
    secrets = of_kind(docs, "Secret")
    problems = []
    for dep in of_kind(docs, "Deployment").values():
        pod = dep["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            where = f"{dep['metadata']['name']}/{c['name']}"
            env = env_of(docs, c)
            wanted = [k for k in env if k.endswith("_FILE") and (k.startswith("HERALD_KAFKA__") or c["name"] == "worker")]
            for key in wanted:
                path = PurePosixPath(env[key])
                mount = next((m for m in c.get("volumeMounts", []) if path.parent == PurePosixPath(m["mountPath"])), None)
                if mount is None:
                    problems.append(f"{where}: {key}={path} is in no mounted volume")
                    continue
                secret = volumes.get(mount["name"], {}).get("secret", {}).get("secretName")
                items = {**secrets.get(secret, {}).get("stringData", {}), **secrets.get(secret, {}).get("data", {})}
                if path.name not in items:
                    problems.append(f"{where}: {key}={path}: Secret {secret} has no key {path.name}")
    return problems


def test_file_settings_point_at_mounted_secrets(docs):
    assert not check_files(docs)


def test_the_file_check_catches_a_missing_mount(docs):
    broken = copy.deepcopy(docs)
    c = main_container(deployment(broken, "scheduler"))
    c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] != "kafka"]
    assert check_files(broken)
    broken = copy.deepcopy(docs)
    of_kind(broken, "ConfigMap")["herald-config"]["data"]["HERALD_KAFKA__SSL_CA_FILE"] = "/etc/herald/kafka/ca.pem"
    assert check_files(broken)


# --- ports and probes -----------------------------------------------------------------------------

def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def worker_port_variable() -> str:
    """The worker's /healthz port: its own setting when Settings has one (a ``worker`` section), else HERALD_METRICS_PORT."""
    return section_field("worker", "port") or "HERALD_METRICS_PORT"


def health_host_variable(process: str) -> str | None:
    """The address the worker's or scheduler's /healthz listens on: HERALD_METRICS_HOST when Settings has it, or its section's host."""
    return "HERALD_METRICS_HOST" if "metrics_host" in Settings.model_fields else section_field(process, "host")


def check_ports(docs: list[dict]) -> list[str]:
    from producers.api.health import router

    problems = []
    api_routes = {r.path for r in router.routes}
    for component in ("worker", "scheduler", "api"):
        dep = deployment(docs, component)
        c = main_container(dep)
        env = env_of(docs, c)
        resolved, _ = resolve(c["args"])
        params = resolved[1] if resolved else {}
        if component == "api":
            port = params.get("port") or effective(env, "HERALD_API_PORT")
            host = params.get("host") or effective(env, "HERALD_API_HOST")
        elif component == "worker":
            port = effective(env, worker_port_variable())
            host = effective(env, health_host_variable("worker")) if health_host_variable("worker") else None
        else:
            port = params.get("metrics_port")
            host = effective(env, health_host_variable("scheduler")) if health_host_variable("scheduler") else None
            if port is None and section_field("scheduler", "port"):
                port = effective(env, section_field("scheduler", "port"))
        if host is not None and _loopback(str(host)):
            problems.append(f"{component}: listens on {host}, which the kubelet and a Service cannot reach")
        declared = [p["containerPort"] for p in c.get("ports", [])]
        if port not in declared:
            problems.append(f"{component}: listens on {port}, containerPorts are {declared}")
        for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
            probe = c.get(kind)
            if probe is None:
                if kind != "startupProbe":
                    problems.append(f"{component}: no {kind}")
                continue
            get = probe.get("httpGet", {})
            if port_number(c, get.get("port")) != port:
                problems.append(f"{component}: {kind} on port {get.get('port')}, the process listens on {port}")
            if component == "api" and get.get("path") not in api_routes:
                problems.append(f"{component}: {kind} path {get.get('path')} is not an API route ({sorted(api_routes)})")
            if component != "api" and get.get("path") != "/healthz":
                problems.append(f"{component}: {kind} path {get.get('path')}, expected /healthz")
        if component == "api" and c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
            problems.append("api: readiness should be /readyz (Kafka, PostgreSQL and Redis answer)")
    for svc in of_kind(docs, "Service").values():
        dep = next((d for d in of_kind(docs, "Deployment").values()
                    if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in svc["spec"]["selector"].items())), None)
        if dep is None:
            problems.append(f"Service {svc['metadata']['name']} selects no Deployment")
            continue
        for p in svc["spec"]["ports"]:
            if port_number(main_container(dep), p["targetPort"]) is None:
                problems.append(f"Service {svc['metadata']['name']}: targetPort {p['targetPort']} is no container port")
    return problems


def test_probes_hit_the_configured_ports(docs):
    assert not check_ports(docs)


def test_the_port_check_catches_a_port_that_moved(docs):
    broken = copy.deepcopy(docs)
    of_kind(broken, "ConfigMap")["herald-config"]["data"]["HERALD_API_PORT"] = "8081"
    assert check_ports(broken)
    broken = copy.deepcopy(docs)
    of_kind(broken, "ConfigMap")["herald-config"]["data"][worker_port_variable()] = "9200"
    assert check_ports(broken)
    broken = copy.deepcopy(docs)
    main_container(deployment(broken, "scheduler"))["args"] = ["scheduler", "--metrics-port", "9110"]
    assert check_ports(broken)
    broken = copy.deepcopy(docs)
    main_container(deployment(broken, "worker"))["livenessProbe"]["httpGet"]["port"] = 9109
    assert check_ports(broken)
    broken = copy.deepcopy(docs)
    main_container(deployment(broken, "api"))["readinessProbe"]["httpGet"]["path"] = "/ready"
    assert check_ports(broken)
    broken = copy.deepcopy(docs)
    del of_kind(broken, "ConfigMap")["herald-config"]["data"]["HERALD_API_HOST"]  # the default, 127.0.0.1
    assert check_ports(broken)
    if health_host_variable("worker"):
        broken = copy.deepcopy(docs)
        del of_kind(broken, "ConfigMap")["herald-config"]["data"][health_host_variable("worker")]
        assert check_ports(broken)
    broken = copy.deepcopy(docs)
    of_kind(broken, "Service")["herald-api"]["spec"]["ports"][0]["targetPort"] = "web"
    assert check_ports(broken)


# --- pods -----------------------------------------------------------------------------------------

def worker_stop_bound(env: dict[str, str]) -> float:
    """How long a worker may take to stop after SIGTERM: its stop setting when Settings has one, else Faust's own bound."""
    variable = section_field("worker", "stop_seconds")
    if variable:
        return float(effective(env, variable))
    import faust

    return float(faust.Worker.shutdown_timeout)


def check_pods(docs: list[dict]) -> list[str]:
    problems = []
    for dep in of_kind(docs, "Deployment").values():
        name = dep["metadata"]["name"]
        pod = dep["spec"]["template"]["spec"]
        if not pod.get("securityContext", {}).get("runAsNonRoot"):
            problems.append(f"{name}: runAsNonRoot is not set")
        for c in containers(dep):
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(res.get(part, {})):
                    problems.append(f"{name}/{c['name']}: resources.{part} needs cpu and memory")
    worker = deployment(docs, "worker")
    if worker["spec"]["replicas"] < 2:
        problems.append("worker: fewer than 2 replicas")
    partitions = effective(env_of(docs, main_container(worker)), "HERALD_PARTITIONS")
    if worker["spec"]["replicas"] > partitions:
        problems.append(f"worker: {worker['spec']['replicas']} replicas for {partitions} partitions (the rest would idle)")
    grace = worker["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    bound = worker_stop_bound(env_of(docs, main_container(worker)))
    if grace < bound + 10:
        problems.append(f"worker: terminationGracePeriodSeconds {grace} is not above its SIGTERM bound {bound:g} s (+10 s)")
    pdbs = [p for p in of_kind(docs, "PodDisruptionBudget").values()
            if p["spec"]["selector"]["matchLabels"].items() <= worker["spec"]["template"]["metadata"]["labels"].items()]
    if not pdbs:
        problems.append("worker: no PodDisruptionBudget")
    scheduler = deployment(docs, "scheduler")
    if not 1 <= scheduler["spec"]["replicas"] <= 2:
        problems.append("scheduler: 1 or 2 replicas")
    return problems


def test_pods_are_sized_bounded_and_non_root(docs):
    assert not check_pods(docs)


def test_the_pod_check_catches_a_short_grace_period_or_missing_limits(docs):
    broken = copy.deepcopy(docs)
    deployment(broken, "worker")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 30
    assert check_pods(broken)
    broken = copy.deepcopy(docs)
    del main_container(deployment(broken, "api"))["resources"]["limits"]
    assert check_pods(broken)
    broken = copy.deepcopy(docs)
    deployment(broken, "worker")["spec"]["replicas"] = 13
    assert check_pods(broken)
    broken = [d for d in copy.deepcopy(docs) if d["kind"] != "PodDisruptionBudget"]
    assert check_pods(broken)


def test_kustomization_lists_every_manifest():
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds():
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(out.stdout) if d]
    assert kinds.count("Deployment") == 4 and "Service" in kinds and "PodDisruptionBudget" in kinds
    assert all(d["metadata"].get("namespace") == "herald" for d in yaml.safe_load_all(out.stdout) if d and d["kind"] != "Namespace")


# --- the image ------------------------------------------------------------------------------------

def dockerfile_stages(text: str) -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, per stage: [[(INSTRUCTION, arguments), ...], ...] (continuations joined)."""
    text = re.sub(r"\\\n", " ", text)
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, rest.strip()))
    return stages


def check_dockerfile(text: str) -> list[str]:
    stages = dockerfile_stages(text)
    problems = []
    if len(stages) < 2:
        return ["the Dockerfile is not multi-stage (a builder and a runtime stage)"]
    final = stages[-1]
    users = [rest for ins, rest in final if ins == "USER"]
    if not users:
        problems.append("the final stage has no USER: it runs as root")
    elif users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"the final stage runs as {users[-1]}")
    entry = [rest for ins, rest in final if ins == "ENTRYPOINT"]
    try:
        if not entry or json.loads(entry[-1]) != ["herald"]:
            problems.append(f"the final stage's ENTRYPOINT is {entry[-1] if entry else None}, expected [\"herald\"]")
    except json.JSONDecodeError:
        problems.append(f"ENTRYPOINT {entry[-1]} is not exec form [\"herald\"] (a shell would not pass SIGTERM on)")
    base = next(rest for ins, rest in final if ins == "FROM").split()[0]
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, flags=re.M))
    base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), base)
    if not base.startswith("python:3.11"):
        problems.append(f"the runtime stage is based on {base}, not python:3.11")
    for ins, rest in (i for stage in stages for i in stage):
        if ins in ("ENV", "ARG") and re.search(r"PASSWORD|SECRET|TOKEN|API_KEY|DATABASE_URL|REDIS_URL", rest, flags=re.I):
            problems.append(f"{ins} {rest}: no secrets in the image")
        if ins in ("COPY", "ADD") and re.search(r"\.jar\b|\.env\b|\.pem\b", rest):
            problems.append(f"{ins} {rest}: no jars or secret files in the image")
    return problems


def test_the_image_is_multi_stage_non_root_and_runs_herald():
    assert not check_dockerfile(DOCKERFILE.read_text())


def test_the_image_check_catches_root_a_shell_entrypoint_and_secrets():
    good = DOCKERFILE.read_text()
    assert check_dockerfile(good.replace("USER 10001:10001", "USER root"))
    assert check_dockerfile(good.replace("USER 10001:10001", ""))
    assert check_dockerfile(good.replace('ENTRYPOINT ["herald"]', "ENTRYPOINT herald"))
    assert check_dockerfile(good.replace('ENTRYPOINT ["herald"]', 'ENTRYPOINT ["python", "-m", "streams"]'))
    assert check_dockerfile(good + "\nENV HERALD_KAFKA__SASL_PASSWORD=hunter2\n")
    assert check_dockerfile(good.replace("python:3.11-slim-bookworm", "python:3.12-slim"))
    # a USER in the builder stage does not count for the runtime stage
    assert check_dockerfile(good.replace("USER 10001:10001", "").replace("WORKDIR /src", "WORKDIR /src\nUSER 10001"))


def test_the_image_copies_every_package_and_the_entry_point_exists():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["herald"] == "infra.tools.cli.main:main"
    copied = set(re.findall(r"^COPY (\w+) \./", DOCKERFILE.read_text(), flags=re.M))
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, f"not copied into the builder: {packages - copied}"
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert {f"!{p}/" for p in packages} <= set(ignore), "a package the build needs is excluded by .dockerignore"
