"""docker-compose.yml, the Dockerfile and .dockerignore hold together (structure only: no Docker engine needed)."""

import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yml"
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?:(:?[-?])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose):
    return compose["services"]


def _resolve(value: str) -> str:
    """A value as compose would interpolate it with no .env: defaults applied, required ones filled in."""
    return INTERPOLATION.sub(lambda m: m.group(3) if m.group(2) in (":-", "-") else "set-by-operator", value)


def _seconds(duration: str) -> float:
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([hms])", duration))


def _profiles(service) -> set[str]:
    return set(service.get("profiles") or [])


def test_services_and_profiles(services):
    assert {"kb-build", "model-fetch", "vllm", "verifier", "verifier-cpu", "verifier-sidecar", "medqa"} <= set(services)
    by_profile = {p: {n for n, s in services.items() if p in _profiles(s)} for p in ("gpu", "cpu", "medqa")}
    assert by_profile["cpu"] == {"kb-build", "verifier-cpu"}  # the CPU profile needs no GPU and no vLLM
    assert {"vllm", "verifier", "kb-build"} <= by_profile["gpu"]
    assert {"vllm", "verifier-sidecar", "medqa", "kb-build"} <= by_profile["medqa"]


def test_vllm_is_pinned_gpu_reserved_health_checked_and_internal(compose, services):
    vllm = services["vllm"]
    tag = re.fullmatch(r"vllm/vllm-openai:v(\d+)\.(\d+)\.(\d+)", vllm["image"])
    assert tag and tuple(map(int, tag.groups())) >= (0, 12, 0)  # structured_outputs exists from 0.12
    assert services["model-fetch"]["image"] == vllm["image"]
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] and d["driver"] == "nvidia" for d in devices)
    check = vllm["healthcheck"]
    assert any("/health" in part for part in check["test"]) and _seconds(check["start_period"]) >= 300
    wrapper = " ".join(vllm["entrypoint"])
    # The key is required by the container itself: it refuses to start without one, then passes it on.
    assert '[ -z "$$VLLM_API_KEY" ]' in wrapper and "exit 64" in wrapper
    assert 'exec vllm serve "$$model" --api-key "$$VLLM_API_KEY" "$$@"' in wrapper and vllm.get("ipc") == "host"
    assert _resolve(vllm["environment"]["VLLM_API_KEY"]) == ""  # passed through, no default key
    assert all(compose["networks"][n].get("internal") for n in vllm["networks"])  # no route off the host


def test_verifiers_probe_grpc_health_and_wait_for_their_dependencies(services):
    import server.healthcheck  # noqa: F401  (the module the probe runs)

    from client.aio import KNOWLEDGE_SERVICE
    from client.readiness import KNOWLEDGE_BASE

    for name in ("verifier", "verifier-cpu", "verifier-sidecar"):
        service = services[name]
        # the medqa sidecar is healthy while the service medqa calls serves (ScoreChain, KI only)
        # and judges against the KB: a KB that failed to load fails every medqa call
        scope = ["--service", KNOWLEDGE_SERVICE, "--service", KNOWLEDGE_BASE] if name == "verifier-sidecar" else []
        assert service["healthcheck"]["test"] == ["CMD", "python", "-m", "server.healthcheck", *scope]
        assert service["healthcheck"]["start_period"] == "120s"
        assert service["depends_on"]["kb-build"]["condition"] == "service_completed_successfully"
        assert any(v.startswith("kb:/kb") for v in service["volumes"])
    for name in ("verifier", "verifier-sidecar"):
        assert services[name]["depends_on"]["vllm"]["condition"] == "service_healthy"
    assert services["medqa"]["depends_on"]["verifier-sidecar"]["condition"] == "service_healthy"
    assert services["vllm"]["depends_on"]["model-fetch"]["condition"] == "service_completed_successfully"


def test_every_dependency_runs_in_each_profile_of_its_dependent(services):
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert _profiles(service) <= _profiles(services[dependency]), f"{name} -> {dependency}"


def test_vllm_wrapper_refuses_no_key_and_passes_the_key_and_arguments(services, tmp_path):
    """Runs the vLLM container's entrypoint with sh, `vllm` replaced by a script that prints its arguments."""
    fake = tmp_path / "vllm"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    vllm = services["vllm"]
    argv = [part.replace("$$", "$") for part in vllm["entrypoint"]] + [_resolve(a) for a in vllm["command"]]
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    refused = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert refused.returncode == 64 and "VLLM_API_KEY is not set" in refused.stderr and not refused.stdout
    started = subprocess.run(argv, capture_output=True, text=True, env={**env, "VLLM_API_KEY": "k e y"})
    assert started.returncode == 0, started.stderr
    args = started.stdout.splitlines()
    command = [_resolve(a) for a in vllm["command"]]
    assert args[:4] == ["serve", "Qwen/Qwen2.5-7B-Instruct", "--api-key", "k e y"] and args[4:] == command[1:]


def test_vllm_gets_its_model_as_the_positional_argument(services):
    # vLLM v0.12 `vllm serve --model X` logs "With `vllm serve`, you should provide the model as a positional
    # argument ... The `--model` option will be removed in v0.13." (vllm/utils/argparse_utils.py); since PR #34973
    # `--served-model-name` without the model first is a ValueError.
    command = services["vllm"]["command"]
    assert not any(re.match(r"--model(=|$)", str(a)) for a in command)
    assert not str(command[0]).startswith("-") and "--served-model-name" in command


def test_no_variable_is_required_by_compose_itself():
    # Compose interpolates every service before it filters by profile, so a ${VAR:?} of the gpu profile would
    # stop `docker compose --profile cpu up` as well (docker/compose#11977).
    required = [m.group(0) for m in INTERPOLATION.finditer(COMPOSE.read_text()) if m.group(2) in (":?", "?")]
    assert not required


def test_verifiers_get_time_to_drain_before_docker_kills_them(services):
    from server.config import ServerSettings

    grace = ServerSettings().grace_period_s
    for name in ("verifier", "verifier-cpu", "verifier-sidecar"):
        assert _seconds(services[name]["stop_grace_period"]) >= grace + 10, name  # Docker's default is 10 s


def test_the_sidecars_load_shedding_cap_is_the_operators_to_size(services, monkeypatch):
    # The right cap is throughput × deadline, which depends on the host: it must be settable without editing
    # the compose file, and it must reach the server as a valid setting.
    from server.config import Settings

    value = services["verifier-sidecar"]["environment"]["KGV_SERVER__MAX_INFLIGHT"]
    assert re.fullmatch(r"\$\{VERIFIER_MAX_INFLIGHT:-\d+\}", value)
    monkeypatch.setenv("KGV_SERVER__MAX_INFLIGHT", _resolve(value))
    assert Settings().server.max_inflight == int(_resolve(value))


def test_one_shot_services_are_not_probed_as_servers(services):
    # kb-build runs this repo's image, whose HEALTHCHECK probes a gRPC server that a KB build never starts.
    assert services["kb-build"]["healthcheck"] == {"disable": True}


def test_every_documented_compose_variable_of_medqa_reaches_it(services):
    # "Environment for compose" in docs/deployment.md: a variable set on the host reaches the container only
    # when the service's environment passes it on.
    docs = (REPO / "docs" / "deployment.md").read_text()
    paragraph = docs[docs.index("Environment for compose"):].split("\n\n", 1)[0]
    documented = set(re.findall(r"`(MEDQA_[A-Z_]+)`", paragraph))
    env = services["medqa"]["environment"]
    assert documented and documented <= set(env)
    source = (REPO / "examples" / "medqa" / "app.py").read_text()
    for name in env:  # and each is a variable the app reads
        assert f'"{name}"' in source, name


def test_medqa_gets_time_to_drain_its_answers_in_flight(services):
    from examples.medqa.app import Config

    env = {k: _resolve(str(v)) for k, v in services["medqa"]["environment"].items()}
    config = Config(verify_timeout_s=float(env["MEDQA_VERIFY_TIMEOUT_S"]),
                    llm_timeout_s=float(env.get("MEDQA_LLM_TIMEOUT_S", Config.llm_timeout_s)))
    assert _seconds(services["medqa"]["stop_grace_period"]) >= config.drain_timeout_s + 2  # Docker's default: 10 s


def test_networks_and_volumes_are_declared(compose, services):
    for name, service in services.items():
        for network in service.get("networks", []):
            assert network in compose["networks"], f"{name}: {network}"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source.startswith(".") or source in compose["volumes"], f"{name}: {source}"
    assert compose["networks"]["backend"]["internal"] is True


def test_kgv_environment_is_real_settings(services, monkeypatch):
    from server.config import Settings

    checked = 0
    for name, service in services.items():
        env = {k: _resolve(str(v)) for k, v in (service.get("environment") or {}).items() if k.startswith("KGV_")}
        for key in list(os.environ):
            if key.startswith("KGV_"):
                monkeypatch.delenv(key)
        for key, value in env.items():
            section, _, field = key.removeprefix("KGV_").lower().partition("__")
            assert field in Settings.model_fields[section].annotation.model_fields, f"{name}: {key}"
            monkeypatch.setenv(key, value)
        Settings()  # values parse and validate as the server would read them
        checked += len(env)
    assert checked >= 20


def test_medqa_and_its_sidecar_share_a_socket_and_use_separate_cache_salts(services):
    sidecar, medqa = services["verifier-sidecar"], services["medqa"]
    shared = {v for v in sidecar["volumes"] if v.startswith("kgv-socket:")} & set(medqa["volumes"])
    assert shared == {"kgv-socket:/run/kgverify"}
    listen = yaml.safe_load(sidecar["environment"]["KGV_SERVER__LISTEN"])
    assert listen == [medqa["environment"]["MEDQA_VERIFIER"]] and listen[0].startswith("unix:///run/kgverify/")
    assert "ports" not in sidecar  # reachable through the socket only
    salts = {_resolve(sidecar["environment"]["KGV_LM__VLLM_CACHE_SALT"]),
             _resolve(medqa["environment"]["MEDQA_CACHE_SALT"])}
    assert len(salts) == 2 and "" not in salts
    assert _resolve(medqa["environment"]["MEDQA_FAIL_MODE"]) == "closed"


def test_the_image_builds_from_what_the_repository_has():
    dockerfile = (REPO / "Dockerfile").read_text()
    pinned = re.search(r'"torch==([\d.]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    assert f'"torch=={pinned}"' in dockerfile and "whl/cpu" in dockerfile
    assert "HEALTHCHECK" in dockerfile and "server.healthcheck" in dockerfile and "\nUSER " in dockerfile
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".git", "tests", "runs"} <= ignored
    assert not ignored & {"server", "client", "kb", "proto", "examples", "pyproject.toml", "README.md"}
    assert (REPO / "kb" / "demo" / "facts.jsonl").is_file()  # KB_INPUT's default, /app/kb/demo/facts.jsonl
    assert (REPO / "examples" / "medqa" / "app.py").is_file()


def test_a_source_change_does_not_reinstall_the_dependencies():
    # Docker reuses a layer only while everything above it is unchanged: `pip install .` after `COPY . .`
    # downloads and installs every dependency again for a one-line change anywhere in the repository.
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()]
    copy_all = lines.index("COPY . .")
    deps = next(i for i, line in enumerate(lines) if "pip install -c constraints.txt . " in line + " ")
    assert lines.index("COPY pyproject.toml constraints.txt ./") < deps < copy_all
    assert any("pip install --no-deps ." in line for line in lines[copy_all:])
    assert not any(re.search(r"pip install (?!--no-deps)\S*\s*\.(\s|$)", line) for line in lines[copy_all:])


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: a pattern matches the path or a folder above it (`*` within one name, `**` any
    number of folders), the last matching pattern wins and `!` re-includes."""
    def regex(pattern: str) -> re.Pattern:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out)

    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for line in patterns:
        negated, pattern = line.startswith("!"), line.lstrip("!").strip("/")
        if any(regex(pattern).fullmatch(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def test_secrets_and_keys_stay_out_of_the_image():
    # `COPY . .` takes whatever the build context holds: compose reads VLLM_API_KEY and HF_TOKEN from .env
    # beside docker-compose.yml, and the TLS commands in docs/deployment.md write keys into the current folder.
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for secret in (".env", ".env.production", "deploy/.env", "ca.key", "server.key", "server.pem", "ca.pem",
                   "server.csr", "ca.srl", "certs/client.key", "secrets/kgverify_tokens", ".git/config"):
        assert _dockerignored(secret, patterns), secret
    for needed in ("server/app.py", "server/healthcheck.py", "client/cli.py", "kb/demo/facts.jsonl",
                   "models/nli-judge/weights.safetensors", "models/nli-judge/config.json", "examples/medqa/app.py",
                   "proto/kgverify/v1/verifier.proto", "pyproject.toml", "README.md"):
        assert not _dockerignored(needed, patterns), needed


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client on this machine")
def test_docker_compose_config_accepts_every_profile():
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("the docker client has no compose plugin here; the structural tests above still ran")
    without_key = {k: v for k, v in os.environ.items() if k != "VLLM_API_KEY"}
    for profile in ("gpu", "cpu", "medqa"):
        result = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "--profile", profile, "config", "-q"],
                                capture_output=True, text=True, env={**os.environ, "VLLM_API_KEY": "x"})
        assert result.returncode == 0, result.stderr
    result = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "--profile", "cpu", "config", "-q"],
                            capture_output=True, text=True, env=without_key)
    assert result.returncode == 0, result.stderr  # the cpu profile needs no vLLM key


def test_the_constraints_pin_every_dependency_within_its_range():
    """constraints.txt pins what `make setup` and the image install (the versions the tests last passed with): each
    of pyproject's dependencies, the dev extra's included, at one version its range admits."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    text = (REPO / "pyproject.toml").read_text()
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and " " not in version, line
            pins[canonicalize_name(name)] = version
    import tomllib

    project = tomllib.loads(text)["project"]
    required = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    for requirement in required:
        version = pins.get(canonicalize_name(requirement.name))
        assert version is not None, f"{requirement.name} is not pinned in constraints.txt: run make lock"
        assert requirement.specifier.contains(version, prereleases=True), (requirement, version)
    assert pins["torch"] == "2.13.0"  # (the CPU build's 2.13.0+cpu matches it; a +cpu pin would not match others)
    makefile, dockerfile = (REPO / "Makefile").read_text(), (REPO / "Dockerfile").read_text()
    assert "-c constraints.txt -e '.[dev]'" in makefile and "pip install -c constraints.txt ." in dockerfile
