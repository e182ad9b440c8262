"""Each subcommand loads only what it uses.

A warm rebuild or a re-push spends most of its time starting up, and verify, place and inspect
run on small airgapped nodes: none of them should pay for requests, yaml, docker, tqdm or
cryptography it never calls. Each case runs the real command in a fresh interpreter, the way
`python -m bundler` does, and reads sys.modules as the run ends; an eager import added back
anywhere on a command's path turns its case red, naming the module.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.cli_helpers import build_args
from tests.servers import Registry

# Runs bundler as `python -m bundler` does, then writes the names of the modules loaded. It
# imports nothing itself, so whatever is listed was loaded by bundler.
_LAUNCHER = """
import sys
from bundler.__main__ import run
try:
    sys.exit(run(sys.argv[2:]))
finally:  # --help and --version end in SystemExit from argparse
    with open(sys.argv[1], "w") as f:
        f.write("\\n".join(sorted(sys.modules)))
"""

# What no command needs unless asked for: the network stack, YAML, the Docker SDK, progress
# bars, signatures, and bundler's own modules of the other commands.
NETWORK = {"requests", "urllib3", "charset_normalizer", "bundler.registry.client",
           "bundler.registry.transport", "bundler.sources.registry", "bundler.registry.writer",
           "bundler.registry.endpoint"}
OPTIONAL = {"yaml", "docker", "tqdm", "cryptography", "jsonschema", "bundler.sources.docker",
            "bundler.bundleformat.signing", "bundler.chart"}
BUILD_ONLY = {"bundler.commands.build", "bundler.sinks.bundle", "bundler.stage", "bundler.config",
              "bundler.bundleformat.sbom", "bundler.progress", "bundler.mutate"}
PUSH_ONLY = {"bundler.commands.push", "bundler.sinks.registry", "bundler.registry.api"}
# Only build and push log (retries, endpoints); loading logging costs the others ~5 ms.
# tarfile (~1 MiB): only a build writes tar headers, verify's reader is tarstream; the blob
# cache: only a build keeps one.
OFFLINE_ABSENT = NETWORK | OPTIONAL | BUILD_ONLY | PUSH_ONLY | {"logging", "tarfile",
                                                                 "bundler.cache"}
# gRPC: only status and place --wait talk to containerd (place's --help names containerd's
# default socket, so bundler.containerd itself, which loads no gRPC, may load).
CONTAINERD = {"grpc", "bundler.commands.status"}

STEM = "k3s-airgap-images-multus-amd64"
REFS = ["rancher/multilist:v1", "busybox:1.36.1"]


def modules_of(*args: str, cwd: Path | None = None, env: dict | None = None
               ) -> tuple[set[str], subprocess.CompletedProcess]:
    """The modules loaded by the time `bundler ARGS` ends, and how the run went."""
    with tempfile.TemporaryDirectory(prefix="bundler-imports-") as d:
        listing = Path(d) / "modules.txt"
        run = subprocess.run([sys.executable, "-c", _LAUNCHER, str(listing), *args],
                             capture_output=True, text=True, cwd=cwd, timeout=300,
                             stdin=subprocess.DEVNULL,
                             env={**os.environ, "XDG_CACHE_HOME": d, "DOCKER_CONFIG": d,
                                  **(env or {})})
        loaded = set(listing.read_text().split("\n")) if listing.exists() else set()
    assert loaded, f"bundler {' '.join(args)} wrote no module list: {run.stderr}"
    return loaded, run


def loaded_of(names: set[str], loaded: set[str]) -> list[str]:
    """Those of `names` that are loaded, or a submodule of them is."""
    return sorted(n for n in names if n in loaded or any(m.startswith(n + ".") for m in loaded))


@pytest.fixture(scope="module")
def built(fixture_registry, tmp_path_factory) -> dict:
    """A preserve bundle built from the fixture registry, signed and with an SBOM (the key's
    public half kept for verify --key), and the modules that build loaded."""
    tmp = tmp_path_factory.mktemp("imports")
    key, pub = _keypair(tmp)
    loaded, run = modules_of(*build_args(fixture_registry, tmp, REFS, "--sign-key", str(key),
                                         "--sbom"))
    assert run.returncode == 0, run.stderr
    return {"dir": tmp / "dist", "bundle": tmp / "dist" / f"{STEM}.tar.zst", "pub": pub,
            "signed_build": loaded, "tmp": tmp}


def _keypair(d: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    (d / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (d / "key.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return d / "key.pem", d / "key.pub"


def test_the_launcher_sees_what_is_imported_late(built):
    # cryptography is imported inside signing's functions, only when a key is given, and uuid
    # inside sbom's, only for an SBOM: seeing them shows that a module loaded late, inside a
    # command, is caught too.
    assert loaded_of({"cryptography", "bundler.bundleformat.signing", "uuid"},
                     built["signed_build"]) == ["bundler.bundleformat.signing", "cryptography",
                                                "uuid"]


@pytest.mark.parametrize("command", ["verify", "place", "inspect"])
def test_offline_commands_load_no_network_yaml_docker_bars_or_crypto(built, tmp_path, command):
    extra = ["--images-dir", str(tmp_path / "images")] if command == "place" else []
    loaded, run = modules_of(command, str(built["bundle"]), *extra)
    assert run.returncode == 0, run.stderr
    assert loaded_of(OFFLINE_ABSENT | CONTAINERD, loaded) == []


@pytest.mark.parametrize("command", ["status", "place --wait"])
def test_status_and_place_wait_load_grpc_and_no_network_yaml_docker_bars_or_crypto(
        built, tmp_path, containerd, command):
    done = containerd.import_bundle(built["bundle"])
    assert done.returncode == 0, done.stderr
    extra = ["--images-dir", str(tmp_path / "images"), "--wait", "0"] \
        if command == "place --wait" else []
    loaded, run = modules_of(command.split()[0], str(built["bundle"]), "--containerd-socket",
                             str(containerd.socket), *extra)
    assert run.returncode == 0, run.stdout + run.stderr
    # (grpc loads logging itself.)
    assert loaded_of(OFFLINE_ABSENT - {"logging"}, loaded) == []
    assert loaded_of(CONTAINERD | {"bundler.containerd"}, loaded) == sorted(
        CONTAINERD | {"bundler.containerd"})


def test_verify_with_a_key_loads_cryptography_and_nothing_else_extra(built):
    loaded, run = modules_of("verify", str(built["bundle"]), "--key", str(built["pub"]))
    assert run.returncode == 0, run.stderr
    assert loaded_of(OFFLINE_ABSENT, loaded) == ["bundler.bundleformat.signing", "cryptography"]


def test_a_registry_build_loads_no_docker_chart_bars_or_crypto(fixture_registry, tmp_path):
    loaded, run = modules_of(*build_args(fixture_registry, tmp_path, REFS))
    assert run.returncode == 0, run.stderr
    # (signing and sbom, and what they need, cryptography and uuid: only with a key and for
    # an SBOM. subprocess and difflib: config.py's credential helpers and "did you mean", for
    # the few runs that need them. verify is loaded: build checks what it writes.)
    assert loaded_of({"docker", "tqdm", "cryptography", "jsonschema", "uuid", "subprocess",
                      "difflib", "bundler.sources.docker", "bundler.chart",
                      "bundler.bundleformat.signing", "bundler.bundleformat.sbom"} | PUSH_ONLY,
                     loaded) == []
    assert "bundler.checks.verify" in loaded
    assert loaded_of({"requests", "bundler.sources.registry"}, loaded) == [
        "bundler.sources.registry", "requests"]


def test_push_loads_no_yaml_docker_bars_crypto_or_build(built, tmp_path):
    target = Registry(tmp_path / "target").start()
    try:
        loaded, run = modules_of("push", str(built["bundle"]), "--to", f"{target.host}/m")
    finally:
        target.stop()
    assert run.returncode == 0, run.stderr
    # (config: the target's auth and TLS.)
    assert loaded_of(OPTIONAL | BUILD_ONLY - {"bundler.config", "bundler.progress"},
                     loaded) == []


def test_images_loads_no_network_zstd_or_other_commands(tmp_path):
    chart = tmp_path / "c"
    chart.mkdir()
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: c\nversion: 1.0.0\n"
                                      "appVersion: v1\n")
    (chart / "values.yaml").write_text("image:\n  repository: rancher/x\n  tag: v2\n")
    loaded, run = modules_of("images", "--chart", str(chart))
    assert run.returncode == 0, run.stderr
    assert "rancher/x:v2" in run.stdout
    assert loaded_of(NETWORK | OPTIONAL - {"yaml", "bundler.chart"} | BUILD_ONLY | PUSH_ONLY
                     | {"zstandard", "bundler.checks.verify", "logging"}, loaded) == []


@pytest.mark.parametrize("args", [["--version"], ["--help"]])
def test_help_and_version_load_no_command(args):
    loaded, run = modules_of(*args)
    assert run.returncode == 0, run.stderr
    assert loaded_of(OFFLINE_ABSENT | CONTAINERD | {"zstandard", "bundler.checks.verify"},
                     loaded) == []


def test_a_commands_help_loads_only_that_command():
    loaded, run = modules_of("verify", "--help")
    assert run.returncode == 0, run.stderr
    assert "--max-inflation RATIO" in run.stdout
    assert loaded_of(OFFLINE_ABSENT, loaded) == []


@pytest.fixture(scope="module")
def cut(built, tmp_path_factory) -> Path:
    """The built bundle cut into parts (split's own imports checked as it runs)."""
    out = tmp_path_factory.mktemp("parts")
    loaded, run = modules_of("split", str(built["bundle"]), "--size", "100kB", "-o", str(out))
    assert run.returncode == 0, run.stderr
    assert loaded_of(OFFLINE_ABSENT | {"zstandard", "bundler.checks.verify"}, loaded) == []
    return out / f"{STEM}.tar.zst.parts.json"


@pytest.mark.parametrize("command", ["join", "verify", "place", "inspect"])
def test_parts_list_commands_load_no_network_yaml_docker_bars_or_crypto(cut, tmp_path, command):
    extra = {"place": ["--images-dir", str(tmp_path / "images")],
             "join": ["-o", str(tmp_path)]}.get(command, [])
    loaded, run = modules_of(command, str(cut), *extra)
    assert run.returncode == 0, run.stderr
    assert loaded_of(OFFLINE_ABSENT, loaded) == []
    if command == "join":  # it reads the parts and the list, never the content
        assert loaded_of({"zstandard", "bundler.checks.layout"}, loaded) == []
