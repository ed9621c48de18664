"""The deployment files (docker/, cluster/, docs/deploy.md): they parse, agree with each other
and with the package, and every `swap`/`ray` command in them is one those programs accept.

Run: pytest tests/unit/test_deploy.py
No Docker engine or Kubernetes runs here: nothing is built, started or applied. What is checked is
what `docker build`, `docker compose`, `ray up` and the KubeRay operator would read.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shlex
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement

import swap.cli

from ..helpers import REPO

ROOT = REPO
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
RAY_VERSION = importlib.metadata.version("ray")
IMAGE, CUDA_IMAGE = f"swap:{VERSION}", f"swap:{VERSION}-cuda"
METRICS_PORT = "8080"  # every Ray node's metrics export port, in every deployment
PROMETHEUS_YML = ROOT / "cluster/prometheus.yml"  # the monitoring work's files: read, not owned
DASHBOARD = ROOT / "cluster/grafana/swap-dashboard.json"
OWN_FILES = [
    "docker/compose.yaml",
    "cluster/aws.yaml",
    "cluster/kuberay/raycluster.yaml",
    "cluster/kuberay/rayjob.yaml",
    "cluster/kuberay/storage.yaml",
    "cluster/kuberay/podmonitor.yaml",
    "cluster/grafana/provisioning/datasources/prometheus.yaml",
    "cluster/grafana/provisioning/dashboards/swap.yaml",
]


def needs(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path.relative_to(ROOT)} (monitoring work) does not exist yet")
    return path


def load(rel: str):
    return yaml.safe_load((ROOT / rel).read_text())


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}; a missing :? variable raises."""

    def value(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg or ""

    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", value, text)


def compose(env: dict[str, str] | None = None) -> dict:
    text = (ROOT / "docker/compose.yaml").read_text()
    env = {"RAY_AUTH_TOKEN": "test-token"} if env is None else env
    return yaml.safe_load(interpolate(text, env))


def kube_docs() -> dict[str, dict]:
    docs = {}
    for path in sorted((ROOT / "cluster/kuberay").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return docs


def cluster_specs() -> dict[str, dict]:
    docs = kube_docs()
    return {
        "RayCluster": docs["RayCluster/swap"]["spec"],
        "RayJob": docs["RayJob/swap-quickstart"]["spec"]["rayClusterSpec"],
    }


def pod_templates(spec: dict):
    yield "head", spec["headGroupSpec"]
    yield from ((g["groupName"], g) for g in spec["workerGroupSpecs"])


# ---- commands: find every `ray ...`/`swap ...` a file runs, and have them parsed for real ----


def commands_in(line: str) -> list[list[str]]:
    """The `ray`/`swap` invocations in a shell line (inside $(...) too), as argv lists."""
    parts = re.findall(r"\$\(([^)]*)\)", line) + [re.sub(r"\$\([^)]*\)", "X", line)]
    found = []
    for part in parts:
        for segment in re.split(r"\|\||&&|[;|]", part):
            words = [
                w for w in shlex.split(segment, comments=True) if not re.fullmatch(r"\w+=.*", w)
            ]
            redirect = next((i for i, w in enumerate(words) if re.match(r"\d?[<>]", w)), None)
            words = words[:redirect]
            if words and words[0] in ("ray", "swap"):
                found.append(words)
    return found


def ray_command(argv: list[str]):
    """Parse argv with the `ray` CLI's own click commands (nothing runs); return the command."""
    import click
    from ray.scripts.scripts import cli

    assert argv[0] == "ray", argv
    command, args = cli, argv[1:]
    while isinstance(command, click.Group):
        assert args and args[0] in command.commands, f"{argv}: not a ray command"
        command = command.commands[args.pop(0)]
    try:
        command.make_context(" ".join(argv[:2]), list(args))
    except click.ClickException as exc:
        pytest.fail(f"{' '.join(argv)}: {exc.format_message()}")
    return command


def ray_options(argv: list[str]) -> dict[str, str | bool]:
    ray_command(argv)
    options = {}
    for word in argv:
        if word.startswith("--"):
            key, sep, value = word[2:].partition("=")
            options[key] = value if sep else True
    return options


def swap_command(argv: list[str]):
    """Parse argv as `swap` does (argparse, overrides after options); return the namespace."""
    assert argv[0] == "swap", argv
    args, extra = swap.cli.parser().parse_known_args(argv[1:])
    assert not [x for x in extra if x.startswith("-")], f"{argv}: unknown options {extra}"
    if extra:
        args.overrides += extra
    return args


def validate_spec(args, spec_files: dict[str, Path]) -> None:
    """`swap validate` on the spec (and overrides) that a run/submit/validate command names."""
    if getattr(args, "spec_env", None) or not getattr(args, "spec", None):
        return
    spec = spec_files.get(args.spec, ROOT / args.spec)
    assert swap.cli.main(["validate", str(spec), *args.overrides]) == 0, args


def deploy_doc() -> str:
    """docs/deploy.md, which the README links to for everything about deploying."""
    return (ROOT / "docs" / "deploy.md").read_text()


def deploy_doc_lines() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", deploy_doc(), re.S)
    return [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]


def all_commands() -> list[list[str]]:
    lines = []
    for service in compose()["services"].values():
        command = service.get("command")
        if isinstance(command, list):
            lines.append(shlex.join(command))
        lines.append(shlex.join(service.get("healthcheck", {}).get("test", [])[1:]))
    aws = load("cluster/aws.yaml")
    lines += aws["head_start_ray_commands"] + aws["worker_start_ray_commands"]
    for spec in cluster_specs().values():
        for role, group in pod_templates(spec):
            head = ["--head"] if role == "head" else []
            params = [f"--{k}={v}" for k, v in group["rayStartParams"].items()]
            lines.append(shlex.join(["ray", "start", *head, *params]))  # how KubeRay starts Ray
    lines.append(kube_docs()["RayJob/swap-quickstart"]["spec"]["entrypoint"])
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        for instr, arg in instructions(dockerfile):
            if instr in ("RUN", "CMD"):
                lines.append(shlex.join(json.loads(arg)) if arg.startswith("[") else arg)
    lines += deploy_doc_lines()
    return [cmd for line in lines for cmd in commands_in(line)]


def test_every_command_parses_and_names_a_valid_spec(tmp_path):
    configmap = kube_docs()["ConfigMap/swap-job-spec"]["data"]["spec.yaml"]
    (tmp_path / "spec.yaml").write_text(configmap)
    spec_files = {"/etc/swap/spec.yaml": tmp_path / "spec.yaml"}
    commands = all_commands()
    assert len(commands) >= 15
    for argv in commands:
        if "--help" in argv:
            continue  # the next test runs those
        if argv[0] == "ray":
            ray_command(argv)
        else:
            validate_spec(swap_command(argv), spec_files)


def test_every_subcommand_used_has_working_help(capsys):
    from click.testing import CliRunner
    from ray.scripts.scripts import cli

    subcommands = {
        (a[0], a[1]) if a[1:2] != ["job"] else (a[0], "job", a[2]) for a in all_commands()
    }
    assert {("ray", "start"), ("swap", "run"), ("swap", "submit")} <= subcommands
    for sub in sorted(subcommands):
        if sub[0] == "ray":
            result = CliRunner().invoke(cli, [*sub[1:], "--help"])
            assert result.exit_code == 0 and "Usage:" in result.output, sub
        elif sub[1].startswith("-"):
            continue  # `swap --help` itself
        else:
            with pytest.raises(SystemExit) as exit_:
                swap.cli.main([sub[1], "--help"])
            assert exit_.value.code == 0 and "usage: swap" in capsys.readouterr().out, sub


def test_the_configmap_spec_passes_swap_validate(tmp_path, capsys):
    """The spec the RayJob runs (tests/integration/test_cli.py runs the console script)."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(kube_docs()["ConfigMap/swap-job-spec"]["data"]["spec.yaml"])
    assert swap.cli.main(["validate", str(spec)]) == 0
    assert f"{spec}: valid" in capsys.readouterr().err
    spec.write_text(spec.read_text().replace("workers: 2 ", "workers: 3 "))  # 512 % 3 != 0
    assert swap.cli.main(["validate", str(spec)]) == 2
    assert "phase1.batch_size" in capsys.readouterr().err


# ---- files parse; images and versions agree with pyproject.toml and the installed Ray ----


def test_every_yaml_and_json_file_parses():
    paths = [p for d in ("docker", "cluster") for p in sorted((ROOT / d).rglob("*")) if p.is_file()]
    parsed = set()
    for path in paths:
        if path.suffix in (".yaml", ".yml"):
            docs = list(yaml.safe_load_all(path.read_text()))
            assert docs and all(isinstance(d, dict) for d in docs), path
        elif path.suffix == ".json":
            assert isinstance(json.loads(path.read_text()), dict), path
        else:
            continue
        parsed.add(str(path.relative_to(ROOT)))
    assert set(OWN_FILES) <= parsed


def instructions(name: str) -> list[tuple[str, str]]:
    """A Dockerfile's instructions, continuation lines joined, comments dropped."""
    result, buffer = [], ""
    for raw in (ROOT / "docker" / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        instr, _, rest = (buffer + line).partition(" ")
        result.append((instr.upper(), " ".join(rest.split())))
        buffer = ""
    return result


@pytest.mark.parametrize(
    ("name", "tag", "platform"),
    [("Dockerfile", IMAGE, "cpu"), ("Dockerfile.cuda", CUDA_IMAGE, "cu")],
)
def test_dockerfile_installs_this_version_as_a_wheel_on_the_pinned_ray_image(name, tag, platform):
    text = (ROOT / "docker" / name).read_text()
    assert f"# docker build -f docker/{name} -t {tag} ." in text
    steps = instructions(name)
    args = dict(a.split("=", 1) for i, a in steps if i == "ARG" and "=" in a)
    assert args["SWAP_VERSION"] == VERSION and args["RAY_VERSION"] == RAY_VERSION
    ray_requirement = next(
        Requirement(r) for r in PYPROJECT["project"]["dependencies"] if "ray" in r
    )
    assert ray_requirement.specifier.contains(RAY_VERSION)

    def expand(s: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], s)

    bases = [expand(a).split()[0] for i, a in steps if i == "FROM"]
    assert len(bases) == 2 and bases[0] == bases[1]
    match = re.fullmatch(
        rf"rayproject/ray:{re.escape(RAY_VERSION)}-py311-(cpu|cu\d{{3}})", bases[0]
    )
    assert match and match.group(1).startswith(platform), bases[0]
    final = steps[max(i for i, (instr, _) in enumerate(steps) if instr == "FROM") :]
    assert not [a for i, a in final if i in ("COPY", "ADD")], "the source must not be copied in"
    assert [a for i, a in final if i == "USER"][-1] == "ray"
    runs = " ".join(expand(a) for i, a in final if i == "RUN")
    assert f"/wheels/swap-{VERSION}-py3-none-any.whl" in runs
    assert "--mount=type=bind,from=wheel,source=/wheels" in runs
    assert f'"ray[default,train]=={RAY_VERSION}"' in runs
    assert f"download.pytorch.org/whl/{match.group(1)} " in runs
    torch = {r for r in PYPROJECT["project"]["dependencies"] if r.startswith("torch")}
    assert torch and all(f'"{r}"' in runs for r in torch)
    assert f'org.opencontainers.image.version="{VERSION}"' in expand(text)
    for volume_target in ("/home/ray/runs", "/tmp/ray"):  # compose mounts named volumes there
        assert re.search(rf"mkdir -p [^&]*{volume_target}\b", runs)


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_build_context_sends_only_what_the_wheel_needs(name):
    sources = [a.split()[:-1] for i, a in instructions(name) if i == "COPY" and "--from" not in a]
    sources = [s.rstrip("/") for group in sources for s in group]
    assert sorted(sources) == ["README.md", "pyproject.toml", "swap"]
    assert all((ROOT / s).exists() for s in sources)
    ignore = (ROOT / "docker" / f"{name}.dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1 :][:3] == ["!pyproject.toml", "!README.md", "!swap"]


# ---- docker/compose.yaml ----


def test_compose_runs_a_head_two_workers_prometheus_and_grafana_on_localhost_only():
    services = compose()["services"]
    ray_nodes = {n: s for n, s in services.items() if s.get("image") == IMAGE}
    assert set(services) - set(ray_nodes) == {"prometheus", "grafana"}
    heads = [n for n, s in ray_nodes.items() if "--head" in s["command"]]
    workers = [n for n in ray_nodes if n not in heads]
    assert heads == ["ray-head"] and len(workers) == 2
    for service in services.values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port
    head = ray_options(services["ray-head"]["command"])
    for name, service in ray_nodes.items():
        assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
        assert service["environment"]["RAY_AUTH_MODE"] == "token"
        assert service["environment"]["RAY_AUTH_TOKEN"] == "test-token"
        assert service["working_dir"] == "/home/ray"
        assert "swap-runs:/home/ray/runs" in service["volumes"]
        options = ray_options(service["command"])
        assert options["metrics-export-port"] == METRICS_PORT and options["block"] is True
        if name in workers:
            assert options["address"] == f"ray-head:{head['port']}"
            assert service["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert services["ray-head"]["ports"] == [f"127.0.0.1:8265:{head['dashboard-port']}"]
    assert head["dashboard-port"] == "8265" and head["num-cpus"] == "0"
    with pytest.raises(KeyError, match="RAY_AUTH_TOKEN"):  # `up` refuses to start without it
        compose({})


def test_compose_prometheus_reads_the_heads_service_discovery_file():
    services = compose()["services"]
    config = yaml.safe_load(needs(PROMETHEUS_YML).read_text())
    sd_file = config["scrape_configs"][0]["file_sd_configs"][0]["files"][0]
    sd_dir = str(Path(sd_file).parent)
    assert f"ray-tmp:{sd_dir}" in services["ray-head"]["volumes"]
    prometheus = services["prometheus"]
    assert f"ray-tmp:{sd_dir}:ro" in prometheus["volumes"]
    assert prometheus["depends_on"] == ["ray-head"]  # the head's image makes the volume writable
    mounts = dict(v.rsplit(":", 2)[:2] for v in prometheus["volumes"] if v.startswith("../"))
    assert (ROOT / "docker" / next(iter(mounts))).resolve() == PROMETHEUS_YML
    assert f"--config.file={mounts['../cluster/prometheus.yml']}" in prometheus["command"]
    assert prometheus["ports"] == ["127.0.0.1:9090:9090"]
    assert set(compose()["volumes"]) == {"ray-tmp", "swap-runs", "prometheus-data"}


def test_grafana_is_provisioned_with_the_dashboard_and_the_compose_prometheus():
    grafana = compose()["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    for source in mounts:
        assert (ROOT / "docker" / source).resolve().exists(), source
    datasource = load("cluster/grafana/provisioning/datasources/prometheus.yaml")["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["isDefault"] is True
    assert datasource["url"] == "http://prometheus:9090"  # the compose service and its port
    provider = load("cluster/grafana/provisioning/dashboards/swap.yaml")["providers"][0]
    dashboard_target = mounts["../cluster/grafana/swap-dashboard.json"]
    assert str(Path(dashboard_target).parent) == provider["options"]["path"]
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == dashboard_target
    for kind in ("datasources", "dashboards"):
        target = mounts[f"../cluster/grafana/provisioning/{kind}"]
        assert target == f"/etc/grafana/provisioning/{kind}"
    scrape = yaml.safe_load(needs(PROMETHEUS_YML).read_text())["global"]["scrape_interval"]
    assert datasource["jsonData"]["timeInterval"] == scrape
    variables = json.loads(needs(DASHBOARD).read_text())["templating"]["list"]
    assert {"type": "datasource", "query": "prometheus"}.items() <= variables[0].items()


# ---- cluster/aws.yaml (Ray's cluster launcher) ----


def test_aws_config_passes_rays_own_validation_and_uses_swaps_images():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load("cluster/aws.yaml")
    validate_config(prepare_config(json.loads(json.dumps(config))))
    docker = config["docker"]
    assert docker["head_image"].endswith(f"/{IMAGE}")
    assert docker["worker_image"].endswith(f"/{CUDA_IMAGE}")
    assert "-e RAY_AUTH_MODE=token" in docker["run_options"]
    assert config["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    for local in config["file_mounts"].values():
        assert local.startswith("~/") or (ROOT / local).exists(), local
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    assert types["gpu"]["initialization_commands"] == []  # monitoring runs on the head only
    assert "security_group" not in config["provider"]  # nothing opened beyond intra-cluster + SSH
    head = [c for line in config["head_start_ray_commands"] for c in commands_in(line)][-1]
    worker = [c for line in config["worker_start_ray_commands"] for c in commands_in(line)][-1]
    assert ray_options(head)["dashboard-host"] == "127.0.0.1"
    assert ray_options(head)["metrics-export-port"] == METRICS_PORT
    assert ray_options(worker)["metrics-export-port"] == METRICS_PORT


def test_aws_monitoring_containers_match_compose_and_mount_the_synced_files():
    config = load("cluster/aws.yaml")
    services = compose()["services"]
    runs = [c for c in config["initialization_commands"] if c.startswith("docker run")]
    images = {w for c in runs for w in c.split() if w.startswith(("prom/", "grafana/"))}
    assert images == {services["prometheus"]["image"], services["grafana"]["image"]}
    prefix = f"/tmp/ray_tmp_mount/{config['cluster_name']}/"  # where `ray up` syncs file_mounts
    remote_to_local = {r.strip("/"): ROOT / loc for r, loc in config["file_mounts"].items()}
    for command in runs:
        words = command.split()
        assert all(words[i + 1].startswith("127.0.0.1:") for i, w in enumerate(words) if w == "-p")
        for host in [words[i + 1].split(":")[0] for i, w in enumerate(words) if w == "-v"]:
            if host.startswith(prefix):
                remote = host[len(prefix) :]
                base = next(r for r in remote_to_local if remote.startswith(r))
                assert (remote_to_local[base] / remote[len(base) :].lstrip("/")).exists(), host
    compose_grafana = {v.split(":")[1] for v in services["grafana"]["volumes"]}
    assert compose_grafana <= {v.split(":")[1] for c in runs for v in c.split() if ":" in v}


# ---- cluster/kuberay ----

# From KubeRay's ray.io/v1 Go types (raycluster_types.go, rayjob_types.go): the fields these
# manifests may use, and those KubeRay requires (json tags without omitempty).
KUBERAY_REQUIRED = {
    "head": {"template", "rayStartParams"},
    "worker": {"groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"},
}
KUBERAY_FIELDS = {
    "cluster": {"authOptions", "headGroupSpec", "rayVersion", "workerGroupSpecs",
                "enableInTreeAutoscaling", "autoscalerOptions", "suspend"},
    "head": {"template", "rayStartParams", "serviceType", "headService", "enableIngress"},
    "worker": {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams",
               "template", "idleTimeoutSeconds", "numOfHosts", "suspend"},
    "job": {"entrypoint", "rayClusterSpec", "shutdownAfterJobFinishes", "submissionMode",
            "ttlSecondsAfterFinished", "activeDeadlineSeconds", "submitterPodTemplate",
            "backoffLimit", "runtimeEnvYAML", "clusterSelector", "metadata"},
}  # fmt: skip


def test_kuberay_manifests_carry_the_fields_kuberay_requires():
    docs = kube_docs()
    assert {"RayCluster/swap", "RayJob/swap-quickstart", "ConfigMap/swap-job-spec"} <= set(docs)
    for key in ("RayCluster/swap", "RayJob/swap-quickstart"):
        assert docs[key]["apiVersion"] == "ray.io/v1"
    job = docs["RayJob/swap-quickstart"]["spec"]
    assert set(job) <= KUBERAY_FIELDS["job"] and job["entrypoint"].startswith("swap run ")
    secrets = set()
    for spec in cluster_specs().values():
        assert set(spec) <= KUBERAY_FIELDS["cluster"] and spec["rayVersion"] == RAY_VERSION
        assert spec["authOptions"]["mode"] == "token"
        secrets.add(spec["authOptions"]["secretName"])
        head = set(spec["headGroupSpec"])
        assert KUBERAY_REQUIRED["head"] <= head <= KUBERAY_FIELDS["head"]
        for group in spec["workerGroupSpecs"]:
            assert KUBERAY_REQUIRED["worker"] <= set(group) <= KUBERAY_FIELDS["worker"]
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    env = {e["name"]: e for e in job["submitterPodTemplate"]["spec"]["containers"][0]["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    secrets.add(env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"])
    assert len(secrets) == 1 and f"kubectl create secret generic {secrets.pop()}" in deploy_doc()


def test_kuberay_pods_agree_on_images_ports_volumes_and_the_spec_they_run():
    docs = kube_docs()
    job = docs["RayJob/swap-quickstart"]["spec"]
    spec = yaml.safe_load(docs["ConfigMap/swap-job-spec"]["data"]["spec.yaml"])
    claim = docs["PersistentVolumeClaim/swap-runs"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for name, cluster in cluster_specs().items():
        for role, group in pod_templates(cluster):
            assert group["rayStartParams"]["metrics-export-port"] == METRICS_PORT
            pod = group["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"]
            container = pod["containers"][0]
            gpu = "nvidia.com/gpu" in container["resources"]["limits"]
            assert container["image"] == (CUDA_IMAGE if gpu else IMAGE), (name, role)
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports["metrics"] == int(METRICS_PORT)
            volumes = {v["name"]: v for v in pod["volumes"]}
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            runs = volumes[mounts["/home/ray/runs"]]["persistentVolumeClaim"]["claimName"]
            assert runs == claim["metadata"]["name"]
    assert spec["output"]["dir"] == "/home/ray/runs"
    head = job["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    spec_path = Path(job["entrypoint"].split()[-1])  # swap run /etc/swap/spec.yaml
    mounts = {m["mountPath"]: m["name"] for m in head["containers"][0]["volumeMounts"]}
    volume = next(v for v in head["volumes"] if v["name"] == mounts[str(spec_path.parent)])
    assert volume["configMap"]["name"] == "swap-job-spec"
    assert spec_path.name in docs["ConfigMap/swap-job-spec"]["data"]
    assert job["submitterPodTemplate"]["spec"]["containers"][0]["image"] == IMAGE


def test_podmonitor_scrapes_like_cluster_prometheus_yml():
    monitor = kube_docs()["PodMonitor/swap-ray"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"] == {"ray.io/is-ray-node": "yes"}
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] == "metrics"
    config = yaml.safe_load(needs(PROMETHEUS_YML).read_text())
    assert endpoint["interval"] == config["global"]["scrape_interval"]
    camel = {"source_labels": "sourceLabels", "target_label": "targetLabel"}
    expected = [{camel.get(k, k): v for k, v in rule.items()} for rule in
                config["scrape_configs"][0]["metric_relabel_configs"]]  # fmt: skip
    assert endpoint["metricRelabelings"] == expected


# ---- docs/deploy.md ----


def test_the_deploy_doc_shows_the_commands_and_existing_files():
    section = deploy_doc()
    assert "docker compose -f docker/compose.yaml up -d" in section
    assert "swap submit configs/quickstart.yaml --address http://127.0.0.1:8265 --wait" in section
    paths = r"\b((?:docker|cluster|configs)/[\w./-]+\.(?:yaml|json)|docker/Dockerfile(?:\.cuda)?)\b"
    for rel in re.findall(paths, section):
        assert (ROOT / rel).exists(), rel
    builds = re.findall(r"docker build -f (\S+) -t (\S+) \.", section)
    assert sorted(builds) == [("docker/Dockerfile", IMAGE), ("docker/Dockerfile.cuda", CUDA_IMAGE)]
    docker = load("cluster/aws.yaml")["docker"]
    pushed = set(re.findall(r"docker push (\S+)", section))
    assert pushed == {docker["head_image"], docker["worker_image"]}
    assert "port-forward" in section and "127.0.0.1" in section
