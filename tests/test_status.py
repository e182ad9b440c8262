"""bundler status and place --wait against the real containerd, imported into as K3s does
(tests/k3swatcher.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from bundler.commands import status
from tests.cli_helpers import assert_one_line_error, bundler
from tests.conftest import BUNDLE
from tests.k3swatcher import Watcher

NAMES = ["docker.io/rancher/multilist:v1", "docker.io/rancher/ociindex:v1",
         "docker.io/library/busybox:1.36.1"]


def _digests(dist: Path) -> dict[str, str]:
    doc = json.loads((dist / "k3s-airgap-images-multus-amd64.manifest.json").read_text())
    return {i["reference"]: i["manifestDigest"] for i in doc["images"]}


def _place_wait(bundle: Path, data: Path, ctrd, seconds: str = "60", *extra: str):
    return bundler("place", str(bundle), "--data-dir", str(data), "--wait", seconds,
                   "--containerd-socket", str(ctrd.socket), *extra)


def test_place_wait_reports_every_image_imported_and_pinned(builds, tmp_path, clean_containerd):
    data = tmp_path / "k3s"
    # The labels come a second after the import: place --wait waits for them too.
    with Watcher(clean_containerd, data / "agent" / "images", pin_delay=1.0) as k3s:
        run = _place_wait(builds["p1"] / BUNDLE, data, clean_containerd)
    assert run.code == 0, run
    assert k3s.imported == [BUNDLE] and not k3s.errors
    lines = run.stdout.splitlines()
    assert lines[0].startswith(f"placed {data}/agent/images/{BUNDLE} (")
    digests = _digests(builds["p1"])
    for name in NAMES:
        assert f"{name}: imported ({digests[name]}), pinned" in lines
    assert lines[-1] == (f"OK {builds['p1'] / BUNDLE}: 3 of 3 images imported (containerd at "
                         f"{clean_containerd.socket}, namespace k8s.io), 3 pinned")
    assert "waiting up to 60 s for K3s to import 3 images" in run.stderr
    # status alone, afterwards, says the same (as JSON here).
    again = bundler("status", str(builds["p1"] / BUNDLE), "--containerd-socket",
                    str(clean_containerd.socket), "--json")
    assert again.code == 0, again
    doc = json.loads(again.stdout)
    assert doc["ok"] is True and doc["namespace"] == "k8s.io"
    assert [(i["name"], i["state"], i["containerdDigest"], i["pinned"]) for i in doc["images"]] \
        == [(n, "imported", digests[n], True) for n in NAMES]


def test_one_image_missing(builds, clean_containerd):
    assert clean_containerd.import_bundle(builds["p1"] / BUNDLE).returncode == 0
    clean_containerd.ctr("images", "rm", "--sync", "docker.io/rancher/ociindex:v1", check=True)
    run = bundler("status", str(builds["p1"] / BUNDLE), "--containerd-socket",
                  str(clean_containerd.socket))
    assert run.code == 1, run
    lines = run.stdout.splitlines()
    missing = [line for line in lines if line.startswith("docker.io/rancher/ociindex:v1: ")]
    assert missing and missing[0].startswith("docker.io/rancher/ociindex:v1: missing: not in "
                                             "containerd (namespace k8s.io)")
    assert "K3s's log" in missing[0]
    assert lines[-1].startswith(f"FAILED {builds['p1'] / BUNDLE}: 1 of 3 images not imported ")
    assert sum(": imported (" in line for line in lines) == 2


def test_a_name_at_another_digest(builds, clean_containerd):
    # The compact build names the same images with other manifest digests: an older import.
    assert clean_containerd.import_bundle(builds["u1"] / BUNDLE).returncode == 0
    run = bundler("status", str(builds["p1"] / BUNDLE), "--containerd-socket",
                  str(clean_containerd.socket), "--json")
    assert run.code == 1, run
    doc = json.loads(run.stdout)
    want, have = _digests(builds["p1"]), _digests(builds["u1"])
    assert doc["ok"] is False
    assert [(i["state"], i["bundleDigest"], i["containerdDigest"]) for i in doc["images"]] \
        == [("other digest", want[n], have[n]) for n in NAMES]
    text = bundler("status", str(builds["p1"] / BUNDLE), "--containerd-socket",
                   str(clean_containerd.socket)).stdout
    assert (f"docker.io/library/busybox:1.36.1: other digest: containerd has "
            f"{have['docker.io/library/busybox:1.36.1']}, the bundle "
            f"{want['docker.io/library/busybox:1.36.1']}") in text
    assert "k3s 14284" in text


def test_imported_without_the_pinned_label_passes_with_a_warning_line(builds, tmp_path,
                                                                      clean_containerd):
    data = tmp_path / "k3s"
    started = time.monotonic()
    with Watcher(clean_containerd, data / "agent" / "images", pin=False):
        run = _place_wait(builds["p1"] / BUNDLE, data, clean_containerd)
    assert run.code == 0, run
    assert time.monotonic() - started < 40  # the labels' grace, not all of --wait 60
    assert sum("NOT pinned: " in line and "k3s 14265" in line
               for line in run.stdout.splitlines()) == 3
    assert run.stdout.splitlines()[-1].endswith(", 0 pinned")


def test_an_import_that_never_happens_times_out(builds, tmp_path, clean_containerd):
    data = tmp_path / "k3s"
    started = time.monotonic()
    run = _place_wait(builds["p1"] / BUNDLE, data, clean_containerd, "2", "--json")
    assert run.code == 1, run
    assert 2 <= time.monotonic() - started < 30
    doc = json.loads(run.stdout)
    assert doc["action"] == "placed" and doc["import"]["ok"] is False
    assert {i["state"] for i in doc["import"]["images"]} == {"missing"}
    assert (data / "agent" / "images" / BUNDLE).exists()  # placed; K3s just did not import
    text = _place_wait(builds["p1"] / BUNDLE, data, clean_containerd, "0")
    assert text.code == 1
    assert text.stdout.splitlines()[-1].startswith(
        f"FAILED {builds['p1'] / BUNDLE}: 3 of 3 images not imported within 0 s ")


def test_place_wait_on_a_wrong_socket_places_nothing(builds, tmp_path):
    data = tmp_path / "k3s"
    run = _place_wait(builds["p1"] / BUNDLE, data, _Sock(tmp_path / "none.sock"))
    assert_one_line_error(run, str(tmp_path / "none.sock"), "no such socket",
                          "--containerd-socket")
    assert run.code == 3
    assert not (data / "agent" / "images").exists()


@pytest.mark.parametrize("kind", ["absent", "file"])
def test_status_on_a_socket_that_is_not_containerds(builds, tmp_path, kind):
    path = tmp_path / "c.sock"
    if kind == "file":
        path.write_text("")
    run = bundler("status", str(builds["p1"] / BUNDLE), "--containerd-socket", str(path))
    assert_one_line_error(run, str(path), "no such socket" if kind == "absent"
                          else "not a socket")
    assert run.code == 3


def test_status_of_a_file_that_is_not_a_bundle(tmp_path, containerd):
    junk = tmp_path / "junk.tar.zst"
    junk.write_bytes(b"not zstd")
    run = bundler("status", str(junk), "--containerd-socket", str(containerd.socket))
    assert_one_line_error(run, str(junk))
    assert run.code == 2


def test_wait_flags_that_do_not_go_together(builds, tmp_path, containerd):
    for extra, said in ((["--wait", "-1"], "--wait -1"), (["--wait", "5", "--dry-run"],
                                                           "--dry-run")):
        run = bundler("place", str(builds["p1"] / BUNDLE), "--images-dir", str(tmp_path),
                      "--containerd-socket", str(containerd.socket), *extra)
        assert_one_line_error(run, said)
        assert run.code == 2
    assert os.listdir(tmp_path) == []


def test_bundle_images_reads_names_and_manifest_digests(builds):
    assert status.bundle_images(builds["p1"] / BUNDLE) == [
        (n, _digests(builds["p1"])[n]) for n in NAMES]


class _Sock:
    def __init__(self, path: Path):
        self.socket = path
