"""The directory the examples of README.md and docs/*.md run in, and how they are run.

An example is a fenced ```console block: a line starting with `$ ` is a command (a line ending
in a backslash continues it on the next line), the lines after it up to the next command are
its output (stdout and stderr as a terminal shows them). Shown output must match; `...` inside
a line stands for any text on that line (digests, sizes, paths), and a line of only `...` for
any number of lines. A command that exits non-zero must be followed by `$ echo $?` showing the
code. The commands of one block run in one bash, in a fresh copy of the prepared directory per
page, in page order, as a reader follows along; a fenced block whose info string has `file=NAME`
(```yaml file=registries.yaml) writes NAME there first.

Two hosts stand for loopback registries with TLS (the CA is `ca.pem` in the directory):
`mirror.internal:5000`, holding small multi-arch (amd64, arm64) images under the names of
images.txt, and `registry.internal:5000`, empty, for push. The prepared directory holds
images.txt, registries.yaml (the README's), ca.pem, the bundle `bundler build` writes into dist/,
and two charts shaped like rke2-multus: rke2-multus-v4.3.008.tgz, which pins images.txt, and
rke2-multus-v4.3.017.tgz, with newer tags. A page whose examples pass `--containerd-socket
containerd.sock` runs with a real containerd behind that socket and a stand-in for K3s's
watcher importing from `k3s/agent/images` (Env.k3s).

`python -m tests.docsenv DIR` prepares DIR and keeps the registries up until Ctrl-C, to write
examples against; `python -m tests.docsenv DIR PAGE.md` runs PAGE's examples and prints what
each command printed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests import imagegen as gen
from tests.pki import server_tls
from tests.registryseed import push_index
from tests.servers import Containerd, Registry

ROOT = Path(__file__).resolve().parent.parent
MIRROR = "mirror.internal:5000"
TARGET = "registry.internal:5000"
BUNDLE = "dist/k3s-airgap-images-multus-amd64.tar.zst"
# The examples' K3s containerd socket, in the directory they run in (Env.k3s).
K3S_SOCKET = "containerd.sock"
FENCE = re.compile(r"^(`{3,})(.*)$")
MARK = "\x1e"


@dataclass
class Block:
    page: str
    line: int
    info: str
    lines: list[str]

    @property
    def kind(self) -> str:
        return self.info.split()[0] if self.info.split() else ""

    @property
    def file(self) -> str | None:
        for word in self.info.split()[1:]:
            if word.startswith("file="):
                return word[len("file="):]
        return None


@dataclass
class Command:
    text: str
    line: int
    output: list[str] = field(default_factory=list)


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, in order."""
    found: list[Block] = []
    current: Block | None = None
    fence = ""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = FENCE.match(line)
        if current is None and match:
            fence = match.group(1)
            current = Block(path.name, number, match.group(2).strip(), [])
        elif current is not None and line.strip() == fence:
            found.append(current)
            current = None
        elif current is not None:
            current.lines.append(line)
    assert current is None, f"{path.name}:{current.line}: fence never closed"
    return found


def commands(block: Block) -> list[Command]:
    """The commands of a ```console block, each with the output shown after it."""
    found: list[Command] = []
    continued = False
    for offset, line in enumerate(block.lines, 1):
        if continued:
            found[-1].text += "\n" + line
        elif line.startswith("$ "):
            found.append(Command(line[2:], block.line + offset))
        else:
            assert found, f"{block.page}:{block.line + offset}: output before any command"
            found[-1].output.append(line)
        continued = line.endswith("\\") and not found[-1].output
    return found


def matches(shown: list[str], actual: str) -> bool:
    """Whether `actual` is what `shown` shows, `...` standing for what differs between runs."""
    pattern = []
    for line in shown:
        if line.strip() == "...":
            pattern.append(r"(?:[^\n]*\n)*?")
        else:
            pattern.append(".*?".join(re.escape(p) for p in line.rstrip().split("...")) + r"\n")
    text = "".join(line.rstrip() + "\n" for line in actual.rstrip("\n").splitlines())
    return re.fullmatch("".join(pattern), text, re.DOTALL) is not None


@dataclass
class Env:
    """The prepared directory and the registries behind the example host names."""

    template: Path
    mirror: Registry
    target: Registry
    containerd: Containerd | None = None  # started for the first page that names K3S_SOCKET

    def to_local(self, text: str, command: bool = False) -> str:
        """Example text with the example hosts replaced by the loopback registries. A bare
        `registry.internal:5000` on a command line gets https:// (a loopback host without a
        scheme is plain HTTP; the example's host is not loopback)."""
        if command:
            text = re.sub(r"(?<![\w/.:-])" + re.escape(TARGET), "https://" + self.target.host,
                          text)
        return text.replace(MIRROR, self.mirror.host).replace(TARGET, self.target.host)

    def from_local(self, text: str) -> str:
        for url, name in ((self.mirror.url, MIRROR), (self.target.url, TARGET)):
            text = text.replace(url, "https://" + name)
        return text.replace(self.mirror.host, MIRROR).replace(self.target.host, TARGET)

    def environ(self, work: Path) -> dict[str, str]:
        home = work / ".home"
        home.mkdir(exist_ok=True, mode=0o700)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DOCKER_", "BUNDLER_", "SOURCE_DATE_EPOCH"))}
        env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), LC_ALL="C.UTF-8",
                   PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
                   COLUMNS="100", PYTHONUNBUFFERED="1")
        return env

    def run(self, block: Block, work: Path, skip: set[str] = frozenset(),
            timeout: float = 300) -> list[tuple[Command, int, str]]:
        """Run a console block's commands in one bash in `work`: (command, code, output).
        A command in `skip` is not run (`:` stands in for it)."""
        cmds = commands(block)
        script = ["set +e"]
        for cmd in cmds:
            script.append(":" if cmd.text in skip else self.to_local(cmd.text, command=True))
            script.append(f"__rc=$?; printf '{MARK}%d{MARK}\\n' \"$__rc\"; (exit $__rc)")
        done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=work,
                              env=self.environ(work), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout)
        parts = re.split(MARK + r"(\d+)" + MARK + r"\n", done.stdout)
        results = []
        for i, cmd in enumerate(cmds):
            out = parts[2 * i] if 2 * i < len(parts) else ""
            code = int(parts[2 * i + 1]) if 2 * i + 1 < len(parts) else -1
            results.append((cmd, code, self.from_local(out)))
        return results

    def empty_target(self) -> None:
        """Restart registry.internal:5000 empty, on the same port, so no page's push sees what
        another page pushed."""
        self.target.stop()
        shutil.rmtree(self.target.dir / "data", ignore_errors=True)
        self.target.start(verify=str(self.template / "ca.pem"))

    def stop(self) -> None:
        self.mirror.stop()
        self.target.stop()
        if self.containerd:
            self.containerd.stop()

    @contextlib.contextmanager
    def k3s(self, page: Path, work: Path) -> Iterator[None]:
        """For a page whose examples pass `--containerd-socket containerd.sock`: an empty real
        containerd behind work/containerd.sock, and K3s's watcher (tests/k3swatcher.py) on
        work/k3s/agent/images while the page runs."""
        if f"--containerd-socket {K3S_SOCKET}" not in page.read_text():
            yield
            return
        from tests.k3swatcher import Watcher

        if self.containerd is None:
            self.containerd = Containerd(self.template.parent / "containerd").start()
        self.containerd.clear()
        (work / K3S_SOCKET).symlink_to(self.containerd.socket)
        with Watcher(self.containerd, work / "k3s" / "agent" / "images"):
            yield


def _seed(url: str) -> None:
    """Each image of images.txt as a small amd64 + arm64 index sharing a base layer."""
    base = gen.tar_layer([("dir", "bin"), ("file", "etc/os-release", b"ID=example\n")])
    names = [line.split()[0] for line in (ROOT / "images.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    for seed, ref in enumerate(names, 1):
        repo, tag = ref.removeprefix("docker.io/").rsplit(":", 1)
        children = [gen.image([base, gen.tar_layer(gen.random_files(seed * 10 + i))], arch=arch)
                    for i, arch in enumerate(("amd64", "arm64"))]
        body, media = gen.index(children, oci=False)
        push_index(url, repo, tag, children, body, media)


def _charts(directory: Path) -> None:
    from tests.test_chart import NEW, OLD, make_chart, pack

    for pins in (OLD, NEW):
        with tempfile.TemporaryDirectory() as tmp:
            pack(make_chart(Path(tmp), pins), directory / f"rke2-multus-{pins['version']}.tgz")


def registries_yaml() -> str:
    """The README's registries.yaml, the one file every page's examples pull through."""
    for block in blocks(ROOT / "README.md"):
        if block.file == "registries.yaml":
            return "\n".join(block.lines) + "\n"
    raise AssertionError("README.md shows no ```yaml file=registries.yaml block")


def prepare(root: Path) -> Env:
    """Start the registries, seed the mirror, and fill root/template (see the module doc)."""
    pki = root / "pki"
    pki.mkdir()
    ca, cert, key = server_tls(pki)
    mirror = Registry(root / "mirror", tls=(cert, key)).start(verify=str(ca))
    target = Registry(root / "target", tls=(cert, key))
    try:
        target.start(verify=str(ca))
        env = Env(root / "template", mirror, target)
        _seed_tls(mirror.url, ca)
        env.template.mkdir()
        shutil.copy(ca, env.template / "ca.pem")
        shutil.copy(ROOT / "images.txt", env.template / "images.txt")
        (env.template / "registries.yaml").write_text(env.to_local(registries_yaml()))
        _charts(env.template)
        done = subprocess.run(
            ["bundler", "build", "--registries", "registries.yaml", "--quiet"],
            cwd=env.template, env=env.environ(env.template), capture_output=True, text=True,
            timeout=300)
        assert done.returncode == 0, done.stderr
        shutil.rmtree(env.template / ".home")
    except BaseException:
        mirror.stop()
        target.stop()
        raise
    return env


def _seed_tls(url: str, ca: Path) -> None:
    # registryseed uses requests' defaults; the registries' CA is ours.
    old = os.environ.get("REQUESTS_CA_BUNDLE")
    os.environ["REQUESTS_CA_BUNDLE"] = str(ca)
    try:
        _seed(url)
    finally:
        if old is None:
            del os.environ["REQUESTS_CA_BUNDLE"]
        else:
            os.environ["REQUESTS_CA_BUNDLE"] = old


def run_page(env: Env, page: Path, work: Path, skip: set[str] = frozenset(),
             ) -> list[tuple[Block, Command, int, str]]:
    """Every example of a page, in a fresh copy of the template and an empty push target, in
    order."""
    env.empty_target()
    shutil.copytree(env.template, work, symlinks=True)
    results = []
    with env.k3s(page, work):
        for block in blocks(page):
            if block.file:
                (work / block.file).write_text(env.to_local("\n".join(block.lines) + "\n"))
            if block.kind == "console":
                results.extend((block, *r) for r in env.run(block, work, skip))
    return results


def main(argv: list[str]) -> int:
    root = Path(argv[0]).resolve()
    root.mkdir(parents=True, exist_ok=True)
    env = prepare(root)
    try:
        if len(argv) > 1:
            for page in argv[1:]:
                work = Path(tempfile.mkdtemp(dir=root, prefix="page-"))
                shutil.rmtree(work)
                for block, cmd, code, out in run_page(env, Path(page), work):
                    print(f"--- {block.page}:{cmd.line} exit {code}\n$ {cmd.text}\n{out}",
                          end="" if out.endswith("\n") or not out else "\n")
            return 0
        print(f"template: {env.template}\nmirror.internal:5000 = {env.mirror.url}\n"
              f"registry.internal:5000 = {env.target.url}\nCtrl-C stops the registries")
        # SIGTERM too stops the registries (a background run ignores Ctrl-C).
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0
    finally:
        env.stop()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
