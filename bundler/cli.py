"""The command line: argument parsing, and the one handler that turns errors into exit codes.

Each subcommand imports only the modules it uses, when it runs: verify,
place and inspect run on small airgapped nodes and never load requests, yaml, docker, tqdm or
cryptography; a warm rebuild spends most of its time starting up. A subcommand's arguments
are added only when that subcommand is parsed (_Command), since their defaults and help come
from the modules that do its work. tests/test_imports.py holds every subcommand to this.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from bundler import __version__
from bundler.errors import (
    EXIT_ENVIRONMENT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    BundlerError,
    EnvironmentFailure,
    InputError,
)

if TYPE_CHECKING:
    from bundler.checks.verify import Report

# A bundle broken everywhere would print thousands of lines; the count says the rest.
_MAX_PROBLEMS = 50
_DISTRO_NAMES = {"k3s": "K3s", "rke2": "RKE2"}


class _Command(argparse.ArgumentParser):
    """A subcommand's parser whose arguments are added the first time it parses or shows help.

    `bundler verify X` then never imports build's modules for build's defaults. argparse
    hands a subcommand its arguments through parse_known_args (Python 3.10 to 3.14 alike).
    """

    def __init__(self, *args, arguments: Callable[[argparse.ArgumentParser], None] | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self._arguments = arguments

    def complete(self) -> None:
        add, self._arguments = self._arguments, None
        if add is not None:
            add(self)

    def parse_known_args(self, args=None, namespace=None):
        self.complete()
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            # Said here, with this command's usage: argparse would hand them up to the
            # top-level parser, whose usage names no option of this command.
            self.error(f"unrecognized arguments: {' '.join(extras)}{self._hint(extras)}")
        return namespace, extras

    def _hint(self, extras: list[str]) -> str:
        for extra in extras:
            ours = _THEIR_FLAGS.get(extra.split("=", 1)[0])
            if ours and ours[0] in self._option_string_actions:
                return f" ({self.prog} takes {ours[0]} {ours[1]})"
        return ""

    def format_usage(self) -> str:
        self.complete()
        return super().format_usage()

    def format_help(self) -> str:
        self.complete()
        return super().format_help()


# What users of skopeo, crane and docker type, and bundler's word for it.
_THEIR_FLAGS = {
    "--platform": ("--arch", "amd64, arm64 or a comma-separated list; linux is implied"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bundler", formatter_class=_HelpFormatter,
        description="Build, verify and place K3s airgap image bundles (one zstd image tarball).",
        epilog="examples:\n  bundler build --images images.txt --arch amd64,arm64\n"
               "  bundler verify dist/k3s-airgap-images-multus-amd64.tar.zst\n\n"
               "`bundler COMMAND --help` shows each command's options and examples.",
    )
    p.add_argument("--version", action="version",
                   version=f"bundler {__version__} (k3s-airgap-bundler: K3s airgap image bundles)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="build and push: also say what is retried and why (on stderr)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           parser_class=_Command)
    for name, run, arguments, summary, description, verbose_help, examples in _command_table():
        # -v works before or after the subcommand; SUPPRESS keeps a subcommand's default from
        # undoing a -v given before it.
        c = sub.add_parser(name, arguments=arguments, help=summary, description=description,
                           formatter_class=_HelpFormatter,
                           epilog="examples:\n" + "".join(f"  {e}\n" for e in examples))
        c.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help=verbose_help)
        c.set_defaults(run=run)
    return p


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's help, except that an epilog's indented lines (examples) keep their lines."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = text.split("\n\n")
        return "\n\n".join(
            paragraph if "\n  " in paragraph else super(_HelpFormatter, self)._fill_text(
                paragraph, width, indent)
            for paragraph in paragraphs)


# What -v adds, said where it adds something, and said plainly where it adds nothing.
_NOTHING_MORE = "accepted, adds nothing: this command prints everything it finds without it"
_BUNDLE = "dist/k3s-airgap-images-multus-amd64.tar.zst"


def _command_table() -> list[tuple]:
    """(name, run, add arguments, one-line help, description, -v help, examples) per command."""
    return [
        ("build", _build, _build_arguments,
         "pull the images of an image list into one .tar.zst bundle per architecture",
         "Pull the images of an image list for each architecture of --arch and write, for "
         "each, one zstd-compressed image tarball K3s imports, with its image list and "
         "checksum files.",
         "also say on stderr where each registry's images come from (its endpoints, in the "
         "order tried) and what is retried and why",
         ["bundler build --images images.txt --arch amd64,arm64",
          "bundler build --registries registries.yaml --no-default-endpoint   "
          "# only through your mirror"]),
        ("verify", _verify, _verify_arguments,
         "check a bundle offline: checksums, zstd, tar, digests",
         "Check a bundle in one streaming pass, with no network: its checksum files, zstd "
         "frames, tar members, every blob and layer digest, and the image metadata.",
         _NOTHING_MORE,
         [f"bundler verify {_BUNDLE}",
          f"bundler verify {_BUNDLE} --key cosign.pub --require-checksum"]),
        ("place", _place, _place_arguments,
         "verify a bundle and put it into K3s's agent/images",
         "Verify a bundle, then copy it into the directory K3s (or RKE2) imports images "
         "from, atomically: K3s never sees a partial file. The .txt image list is not copied.",
         _NOTHING_MORE,
         ["sudo bundler place k3s-airgap-images-multus-amd64.tar.zst --key cosign.pub",
          "bundler place k3s-airgap-images-multus-amd64.tar.zst --distro rke2 --dry-run"]),
        ("inspect", _inspect, _inspect_arguments,
         "list the images of a bundle from its metadata",
         "Show the images of a bundle (platform, manifest and config digests, layers and "
         "sizes) from the metadata at its front, without decompressing it whole. Use verify "
         "to check it.",
         _NOTHING_MORE,
         [f"bundler inspect {_BUNDLE}", f"bundler inspect --json {_BUNDLE}"]),
        ("push", _push, _push_arguments,
         "verify a bundle and push its images into a registry",
         "Stream each bundle once, verifying it as verify does, and push every blob as it "
         "streams past (each checked against its digest), then every manifest by digest, "
         "then the tags, into a registry; images keep their manifest digests, and bundles "
         "of several architectures tag an OCI image index. A bundle that does not verify "
         "pushes no manifest and no tag (blobs may already be there).",
         "also say on stderr what is retried and why",
         [f"bundler push {_BUNDLE} --to registry.internal:5000/mirror "
          "--registries registries.yaml"]),
        ("images", _images, _images_arguments,
         "list the images a Helm chart pins in its values (templates are not rendered)",
         "Print, in images.txt format, the images a Helm chart pins in its values and its "
         "subcharts' values (repository + tag, registry, digest; global.systemDefaultRegistry; "
         "a missing tag is the chart's appVersion), with Helm's rules for --values and "
         "--set. Templates are NOT rendered: an image written only inside a template is not "
         "found.",
         _NOTHING_MORE,
         ["bundler images --chart rke2-multus-v4.3.008.tgz > images.txt",
          "bundler images --chart rke2-multus-v4.3.017.tgz --check images.txt"]),
    ] + _node_and_transfer_commands()


def _node_and_transfer_commands() -> list[tuple]:
    """_command_table's rows for the node (status) and for moving bundles (split, join,
    delta, patch)."""
    return [
        ("status", _status, _status_arguments,
         "check that K3s imported a bundle: its images in K3s's containerd",
         "Read K3s's (or RKE2's) containerd and say, for every image of the bundle, whether "
         "its name in namespace k8s.io points at the bundle's manifest digest, and whether "
         "it is pinned. Exit 0 only when every image is imported.",
         _NOTHING_MORE,
         [f"sudo bundler status {_BUNDLE}",
          f"bundler status {_BUNDLE} --containerd-socket /run/k3s/containerd/containerd.sock "
          "--json"]),
        ("split", _split, _split_arguments,
         "cut a bundle into parts no larger than a size, with a parts list",
         "Cut a bundle into NAME.000, NAME.001, ... of at most --size bytes each (default: "
         "the most FAT32 holds) and write NAME.parts.json, recording each part's size and "
         "sha256 and the whole's. `bundler verify` of the parts list names each damaged or "
         "missing part; `bundler join` makes the bundle whole again.",
         _NOTHING_MORE,
         [f"bundler split {_BUNDLE} --size 4GiB -o usb"]),
        ("join", _join, _join_arguments,
         "check the parts of a parts list and write the bundle whole",
         "Join the parts a parts list names into the bundle, checking every part and the "
         "whole as it writes, atomically: a bad part is named and nothing is left under the "
         "bundle's name.",
         _NOTHING_MORE,
         ["bundler join usb/k3s-airgap-images-multus-amd64.tar.zst.parts.json -o dist"]),
        ("delta", _delta, _delta_arguments,
         "write what a site holding one bundle lacks to rebuild another",
         "Write one file holding what a receiver with BASE lacks to rebuild NEW byte for "
         "byte: NEW's frames or blobs that BASE does not hold, its metadata, checksum "
         "manifest, signature, SBOM and sha256sum lines, and the recipe.",
         _NOTHING_MORE,
         [f"bundler delta {_BUNDLE} --base old/k3s-airgap-images-multus-amd64.tar.zst "
          "-o update.delta"]),
        ("patch", _patch, _patch_arguments,
         "rebuild a bundle from its base and a delta",
         "Rebuild the bundle a delta was made for from its base, with its side files, "
         "atomically; it is kept only if it hashes to the sha256 its checksum manifest "
         "records.",
         _NOTHING_MORE,
         ["bundler patch old/k3s-airgap-images-multus-amd64.tar.zst update.delta -o dist"]),
    ]


def _build_arguments(b: argparse.ArgumentParser) -> None:
    from bundler import cache, mutate
    from bundler.bundleformat import compress
    from bundler.commands import build
    from bundler.registry import endpoint

    b.add_argument("--images", default="images.txt", metavar="FILE",
                   help="image list, one reference a line (default: images.txt)")
    b.add_argument("--output-dir", default="dist", metavar="DIR",
                   help="where the bundle and its checksum files go (default: dist)")
    b.add_argument("--name", default=build.DEFAULT_NAME,
                   help=f"file name stem; files are NAME-ARCH.* (default: {build.DEFAULT_NAME})")
    b.add_argument("--arch", default="amd64",
                   help="linux architecture to pull, or several comma-separated "
                        "(amd64,arm64): one bundle each (default: amd64)")
    b.add_argument("--layers", choices=mutate.LAYER_MODES,
                   help="preserve: upstream blobs and manifest digests (default with "
                        "--source registry); uncompressed: plain tar layers, smaller bundle, "
                        "new manifest digests (always with --source docker)")
    b.add_argument("--source", choices=build.SOURCES, default="registry",
                   help="registry: pull over the network (default); docker: export from the "
                        "local Docker engine (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH)")
    b.add_argument("--pull", choices=("missing", "always", "never"),
                   help="with --source docker: pull through the daemon when the image is "
                        "missing (default), always, or never")
    b.add_argument("--registries", metavar="FILE",
                   help="K3s registries.yaml: mirrors, rewrites, auth and TLS per host")
    b.add_argument("--no-default-endpoint", dest="default_endpoint", action="store_false",
                   help="use only the mirrors of registries.yaml, never the registry itself")
    b.add_argument("--level", type=int, default=compress.DEFAULT_LEVEL,
                   help=f"zstd level {compress.MIN_LEVEL}-{compress.MAX_LEVEL} (default: "
                        f"{compress.DEFAULT_LEVEL}); the window stays 2^{compress.WINDOW_LOG}, "
                        "the most K3s decodes")
    b.add_argument("--timeout", type=float, default=endpoint.DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"connect and read timeout (default: {endpoint.DEFAULT_TIMEOUT:g})")
    b.add_argument("--jobs", type=int, default=endpoint.DEFAULT_JOBS, metavar="N",
                   help=f"parallel blob downloads (default: {endpoint.DEFAULT_JOBS})")
    caching = b.add_mutually_exclusive_group()
    caching.add_argument("--cache-dir", metavar="DIR",
                         help=f"blob and compressed-frame cache kept across runs (default: "
                              f"{cache.default_dir()}, from $XDG_CACHE_HOME)")
    caching.add_argument("--no-cache", action="store_true", help="keep nothing across runs")
    b.add_argument("--sign-key", metavar="KEY.pem",
                   help="also write NAME-ARCH.manifest.json.sig, an ECDSA P-256 signature of "
                        "the checksum manifest as `cosign sign-blob --key` writes it (an "
                        "encrypted key's password from $BUNDLER_KEY_PASSWORD)")
    b.add_argument("--sbom", action="store_true",
                   help="also write NAME-ARCH.spdx.json, an SPDX 2.3 bill of materials")
    b.add_argument("--quiet", action="store_true",
                   help="no progress bars, stage lines or closing line")
    b.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def _verify_arguments(v: argparse.ArgumentParser) -> None:
    from bundler.checks import verify

    v.add_argument("bundle", metavar="BUNDLE", help="the .tar.zst to check")
    _proof_arguments(v, verify.DEFAULT_MAX_INFLATION,
                     f"and at least {verify.INFLATION_FLOOR >> 30} GiB (default: "
                     f"{verify.DEFAULT_MAX_INFLATION:g})")
    v.add_argument("--json", action="store_true", help="print a JSON report on stdout")


def _proof_arguments(p: argparse.ArgumentParser, max_inflation: float | None,
                     limits: str) -> None:
    """What vouches for a bundle and how far it may inflate: verify's flags, which push
    checks in the same pass that sends the bundle. `limits` ends --max-inflation's help."""
    p.add_argument("--manifest", metavar="FILE",
                   help="checksum manifest (default: NAME.manifest.json beside the bundle)")
    p.add_argument("--require-checksum", action="store_true",
                   help="fail unless a checksum manifest or sha256sum-*.txt beside the bundle "
                        "(or --manifest) vouches for it")
    p.add_argument("--max-inflation", type=float, default=max_inflation, metavar="RATIO",
                   help=f"stop and fail when the bundle decompresses (tar plus layers) to more "
                        f"than RATIO times its size, {limits}")
    _signed_arguments(p, "require the checksum manifest to be signed with this public key "
                         "(NAME.manifest.json.sig beside it), for a file of this name")


def _signed_arguments(p: argparse.ArgumentParser, key_help: str) -> None:
    """--key and what a signature vouches for besides the bytes: the file's name and date."""
    p.add_argument("--key", metavar="PUB.pem", help=key_help)
    p.add_argument("--allow-rename", action="store_true",
                   help="with --key, accept a bundle whose file name differs from the one its "
                        "checksum manifest was signed for")
    p.add_argument("--not-before", metavar="DATE",
                   help="with --key, refuse a checksum manifest dated before DATE (ISO 8601 "
                        "date or date-time, UTC unless a zone is given) or undated: the date "
                        "is the build's $SOURCE_DATE_EPOCH")


def _place_arguments(pl: argparse.ArgumentParser) -> None:
    from bundler.commands import place

    pl.add_argument("bundle", metavar="BUNDLE", help="the .tar.zst to place")
    where = pl.add_mutually_exclusive_group()
    where.add_argument("--images-dir", metavar="DIR", help="the target directory itself")
    where.add_argument("--data-dir", metavar="DIR",
                       help="K3s/RKE2 data dir; target is DIR/agent/images (default: "
                            f"{place.DATA_DIRS['k3s']}, or {place.DATA_DIRS['rke2']} with "
                            "--distro rke2)")
    pl.add_argument("--distro", choices=sorted(place.DATA_DIRS), default="k3s",
                    help="which default data dir (default: k3s)")
    _signed_arguments(pl, "place only a bundle whose checksum manifest is signed with this "
                          "key, for a file of this name")
    pl.add_argument("--dry-run", action="store_true", help="verify and say what would be done")
    pl.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    pl.add_argument("--force", action="store_true",
                    help="place even when containerd's root (agent/containerd beside the "
                         "images directory) looks too small for the import")
    pl.add_argument("--wait", type=float, metavar="SECONDS",
                    help="after placing, wait up to SECONDS for K3s to import every image "
                         "into its containerd, as bundler status checks it")
    _socket_argument(pl)


def _socket_argument(p: argparse.ArgumentParser) -> None:
    from bundler import containerd

    p.add_argument("--containerd-socket", default=containerd.DEFAULT_SOCKET, metavar="PATH",
                   help=f"K3s's containerd socket (default: {containerd.DEFAULT_SOCKET}, "
                        "which RKE2 uses too)")


def _status_arguments(st: argparse.ArgumentParser) -> None:
    st.add_argument("bundle", metavar="BUNDLE", help="the .tar.zst K3s should have imported")
    _socket_argument(st)
    st.add_argument("--json", action="store_true", help="print a JSON report on stdout")


def _inspect_arguments(ins: argparse.ArgumentParser) -> None:
    ins.add_argument("bundle", metavar="BUNDLE", help="the .tar.zst to inspect")
    ins.add_argument("--sizes", action="store_true",
                     help="also read a compact (--layers uncompressed) bundle's layer sizes, by "
                          "decompressing it whole (a preserve bundle's are always shown)")
    ins.add_argument("--json", action="store_true", help="print JSON on stdout")


def _push_arguments(pu: argparse.ArgumentParser) -> None:
    from bundler.registry import endpoint

    pu.add_argument("bundle", metavar="BUNDLE", nargs="+",
                    help="the .tar.zst to push; several (one per architecture) put each "
                         "image's platforms under one tag, as an OCI image index")
    pu.add_argument("--to", required=True, metavar="HOST[:PORT][/PREFIX]",
                    help="registry host[:port], optionally with a repository prefix "
                         "(images go to PREFIX/<their repository>)")
    pu.add_argument("--registries", metavar="FILE",
                    help="K3s registries.yaml: configs.<host> gives auth and TLS for the "
                         "target")
    pu.add_argument("--jobs", type=int, default=endpoint.DEFAULT_JOBS, metavar="N",
                    help=f"parallel blob uploads (default: {endpoint.DEFAULT_JOBS})")
    pu.add_argument("--timeout", type=float, default=endpoint.DEFAULT_TIMEOUT, metavar="SECONDS",
                    help=f"connect and read timeout per request (default: "
                         f"{endpoint.DEFAULT_TIMEOUT:g})")
    pu.add_argument("--force", action="store_true",
                    help="replace a tag that names something other than another platform "
                         "of the image (said on stderr); without it such a tag is an error")
    pu.add_argument("--print-registries", action="store_true",
                    help="after the push, print on stdout the registries.yaml that makes K3s "
                         "pull these images from there")
    # Default None: push imports verify only when it streams the bundle (a re-push may not).
    _proof_arguments(pu, None, "with verify's floor and default")
    pu.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def _images_arguments(im: argparse.ArgumentParser) -> None:
    im.add_argument("--chart", required=True, metavar="CHART",
                    help="the chart: a .tgz (never extracted to disk) or a directory")
    im.add_argument("--values", action="append", default=[], metavar="FILE",
                    help="a values file, as helm -f; repeat to merge several, later ones win")
    im.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="one value, dotted key (cniplugins.image.tag=v1); applied after "
                         "--values, as helm --set")
    im.add_argument("--all", action="store_true",
                    help="every image, also of components the values disable, each with its "
                         "value path as a comment")
    im.add_argument("--check", metavar="IMAGES_TXT",
                    help="compare with this image list instead of printing: one line per "
                         "drift and exit 1, exit 0 when in step")


def _build(args: argparse.Namespace) -> int:
    from bundler import cache
    from bundler.commands import build
    from bundler.progress import Progress

    _log_to_stderr(args.verbose)
    if args.pull and args.source != "docker":
        raise UsageError("--pull goes with --source docker: a registry build always pulls")
    try:
        build.architectures(args.arch)
    except InputError as e:
        raise UsageError(f"--arch {args.arch!r}: {e}") from None
    opts = build.BuildOptions(
        images=args.images, output_dir=args.output_dir, name=args.name, arch=args.arch,
        layers=args.layers, source=args.source, pull=args.pull or "missing",
        registries=args.registries,
        default_endpoint=args.default_endpoint, sign_key=args.sign_key, sbom=args.sbom,
        level=args.level, timeout=args.timeout, jobs=args.jobs,
        cache_dir=None if args.no_cache else (args.cache_dir or str(cache.default_dir())),
    )
    try:
        result = build.build(opts, Progress(False if args.quiet else None))
    except cache.CacheUnusable as e:
        raise EnvironmentFailure(f"{e}; choose another with --cache-dir, or --no-cache"
                                 ) from None
    except BundlerError as e:
        if e.cause is not None:  # a host or the daemon, not an image: say what to do
            e.next_step = _NEXT_STEPS[args.source]
        raise
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif not args.quiet:
        for one in result.get("bundles", [result]):
            b = one["bundle"]
            print(f"wrote {one['files'][0]}: {_count(len(one['images']), 'image')}, "
                  f"{b['size']} bytes, sha256 {b['sha256']}", file=sys.stderr)
    return 0


# What to do when a build failed for a reason that is no image's own.
_NEXT_STEPS = {
    "registry": "if it cannot be reached from here, pull through a mirror you can reach "
                "(--registries FILE, see docs/registries-yaml.md), try bundler on a local "
                "registry with scripts/demo, or see every attempt with -v",
    "docker": "--source registry pulls without a daemon",
}


def _verify(args: argparse.Namespace) -> int:
    from bundler.checks import verify

    if not args.max_inflation > 0:
        raise UsageError(f"--max-inflation {args.max_inflation:g}: want a positive ratio")
    check = verify.verify
    if args.bundle.endswith(".parts.json"):  # split's parts list: its parts, then the whole
        from bundler.commands import split

        check = split.verify_parts
    with _renamed_hint():
        report = check(args.bundle, args.manifest,
                               require_checksum=args.require_checksum,
                               max_inflation=args.max_inflation, **_signed_checks(args))
    _print_report(report, args.json)
    if report.inflation_limited and not args.json:
        print(f"bundler: note: if this bundle is expected to decompress that far, raise the "
              f"limit with --max-inflation (now {args.max_inflation:g})", file=sys.stderr)
    return 0 if report.ok else EXIT_FAILED


def _place(args: argparse.Namespace) -> int:
    from bundler.commands import place

    target = place.images_dir(args.images_dir, args.data_dir, args.distro)
    checks = _signed_checks(args)
    wanted = _before_wait(args)
    with _renamed_hint(), _import_space_hint():
        done = place.place(args.bundle, target, dry_run=args.dry_run,
                           check_import_space=not args.force, **checks)
    for warning in done.warnings:
        print(f"bundler: warning: {warning}", file=sys.stderr)
    if wanted is not None:
        return _wait(args, done, wanted)
    if args.json:
        json.dump({"path": str(done.path), "size": done.size, "sha256": done.sha256,
                   "action": done.action}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"{done.action} {done.path} ({done.size} bytes, sha256 {done.sha256})")
    if done.action in ("placed", "replaced"):
        print(f"{_DISTRO_NAMES[args.distro]} imports it when it starts, and while running from "
              "v1.29.13, v1.30.9, v1.31.5 and v1.32.0 on")
    elif done.action == "unchanged":
        print("an identical file is already in place: nothing to do")
    return 0


def _before_wait(args: argparse.Namespace) -> list[tuple[str, str]] | None:
    """With --wait: the bundle's images, once containerd has answered, before anything is
    placed (a wrong socket is said with nothing written); None without --wait."""
    if args.wait is None:
        return None
    if not args.wait >= 0:
        raise UsageError(f"--wait {args.wait:g}: want a number of seconds, 0 or more")
    if args.dry_run:
        raise UsageError("--wait and --dry-run exclude each other: a dry run places nothing "
                         "to import")
    from bundler import containerd
    from bundler.commands import status

    with _socket_hint():
        containerd.list_images(args.containerd_socket)
    return status.bundle_images(args.bundle)


def _wait(args: argparse.Namespace, done, wanted: list[tuple[str, str]]) -> int:
    """place --wait after the placement: status until imported or --wait seconds passed."""
    from bundler.commands import status

    if not args.json:
        print(f"{done.action} {done.path} ({done.size} bytes, sha256 {done.sha256})")
        print(f"waiting up to {args.wait:g} s for {_DISTRO_NAMES[args.distro]} to import "
              f"{_count(len(wanted), 'image')}", file=sys.stderr)
    with _socket_hint():
        found = status.wait(args.bundle, args.wait, args.containerd_socket, wanted=wanted)
    if args.json:
        json.dump({"path": str(done.path), "size": done.size, "sha256": done.sha256,
                   "action": done.action, "warnings": list(done.warnings),
                   "import": found.as_json()}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(status.render_text(found, within=args.wait))
    return 0 if found.ok else EXIT_FAILED


def _status(args: argparse.Namespace) -> int:
    from bundler.commands import status

    with _socket_hint():
        found = status.status(args.bundle, args.containerd_socket)
    if args.json:
        json.dump(found.as_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(status.render_text(found))
    return 0 if found.ok else EXIT_FAILED


@contextlib.contextmanager
def _socket_hint() -> Iterator[None]:
    """containerd not found at the socket: the flag that names another."""
    from bundler import containerd

    try:
        yield
    except containerd.Unreachable as e:
        raise type(e)(f"{e}; --containerd-socket names another socket") from None


@contextlib.contextmanager
def _import_space_hint() -> Iterator[None]:
    from bundler.commands import place

    try:
        yield
    except place.ImportSpace as e:
        raise place.ImportSpace(f"{e} (--force places anyway)") from None


def _signed_checks(args: argparse.Namespace) -> dict:
    """verify's key, allow_rename and not_before from --key, --allow-rename, --not-before."""
    from bundler.bundleformat import checksums

    not_before = None
    if args.not_before is not None:
        if args.key is None:
            # Anyone can write a date into an unsigned manifest, an attacker first.
            raise UsageError("--not-before needs --key: the date of an unsigned checksum "
                             "manifest proves nothing")
        try:
            not_before = checksums.parse_time(args.not_before)
        except InputError as e:
            raise UsageError(f"--not-before {args.not_before!r}: {e}") from None
    return {"key": args.key, "allow_rename": args.allow_rename, "not_before": not_before}


@contextlib.contextmanager
def _renamed_hint() -> Iterator[None]:
    """A renamed signed bundle's one line, with the flag that accepts it."""
    from bundler.bundleformat import checksums

    try:
        yield
    except checksums.RenamedBundle as e:
        raise checksums.RenamedBundle(f"{e}; --allow-rename accepts a bundle renamed on "
                                      "purpose") from None


@contextlib.contextmanager
def _force_hint() -> Iterator[None]:
    """A tag push may not move, with the flag that moves it."""
    from bundler.sinks.tags import TagTaken

    try:
        yield
    except TagTaken as e:
        raise TagTaken(f"{e}; --force replaces it") from None


def _print_report(report: Report, as_json: bool) -> None:
    if as_json:
        json.dump(report.as_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    for note in report.notes:
        print(f"bundler: note: {note}", file=sys.stderr)
    for warning in report.warnings:
        print(f"bundler: warning: {warning}", file=sys.stderr)
    if report.ok:
        print(f"OK {report.file}: {_count(len(report.images), 'image')}, "
              f"{_count(report.blobs, 'blob')}, {report.size / 1e6:.1f} MB")
        if report.signed_by:
            key, fingerprint = report.signed_by
            print(f"signed: {report.checked_against[0]} by {key} ({fingerprint})")
        return
    shown = report.problems[:_MAX_PROBLEMS]
    for problem in shown:
        print(f"{report.file}: {problem}")
    if report.problem_count > len(shown):
        print(f"{report.file}: ... and {_count(report.problem_count - len(shown), 'more problem')}")
    print(f"FAILED {report.file}: {_count(report.problem_count, 'problem')}")


def _delta_arguments(d: argparse.ArgumentParser) -> None:
    d.add_argument("new", metavar="NEW", help="the .tar.zst to rebuild at the other side")
    d.add_argument("--base", metavar="BASE", required=True,
                   help="the .tar.zst the other side already holds")
    d.add_argument("-o", "--output", metavar="FILE",
                   help="the delta to write (default: NEW's name with .delta, beside it)")
    d.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def _patch_arguments(pa: argparse.ArgumentParser) -> None:
    pa.add_argument("base", metavar="BASE", help="the .tar.zst the delta was made against")
    pa.add_argument("delta", metavar="DELTA", help="the .delta file")
    pa.add_argument("-o", "--output-dir", metavar="DIR",
                    help="where the bundle and its side files go (default: beside DELTA)")
    pa.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def _delta(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bundler.commands import delta

    info = delta.make(Path(args.new), Path(args.base),
                      Path(args.output) if args.output else None)
    _print_delta(info, args.json, "wrote")
    return 0


def _patch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bundler.commands import delta

    info = delta.patch(Path(args.base), Path(args.delta),
                       Path(args.output_dir) if args.output_dir else None)
    _print_delta(info, args.json, "rebuilt")
    return 0


def _print_delta(info: dict, as_json: bool, verb: str) -> None:
    from pathlib import Path

    if as_json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return
    new = info["new"]
    if verb == "wrote":
        size = Path(info["file"]).stat().st_size
        print(f"wrote {info['file']} ({size} bytes) to rebuild "
              f"{new['file']} ({new['size']} bytes) from {info['base']['file']}")
    else:
        print(f"rebuilt {info['file']} ({new['size']} bytes, sha256:{new['sha256']})")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


class UsageError(InputError):
    """Arguments that do not go together, said with the flags' names (exit 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run bundler; every error ends here as one line on stderr and an exit code."""
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except BundlerError as e:
        return _fail(f"{e}; {e.next_step}" if e.next_step else str(e), e.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except OSError as e:
        # Local I/O failures (disk full, permissions) that no module translated.
        return _fail(str(EnvironmentFailure.from_os_error(e)), EXIT_ENVIRONMENT)


def _fail(message: str, code: int) -> int:
    print(f"bundler: error: {message}", file=sys.stderr)
    return code


def _log_to_stderr(verbose: bool) -> None:
    """What the registry modules log (retries, endpoints, warnings), as bundler's own lines.
    Only build and push log; verify, place, inspect and images do not load logging at all."""
    import logging

    logging.basicConfig(format="bundler: %(levelname)s: %(message)s",
                        level=logging.INFO if verbose else logging.WARNING)
    logging.addLevelName(logging.INFO, "note")
    logging.addLevelName(logging.WARNING, "warning")


def _inspect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bundler.commands import delta
    from bundler.commands import inspect as inspection

    if delta.is_delta(Path(args.bundle)):
        sys.stdout.write(delta.render(delta.describe(Path(args.bundle)), args.json))
        return 0

    info = inspection.inspect(args.bundle, sizes=args.sizes)
    render = inspection.render_json if args.json else inspection.render_text
    sys.stdout.write(render(info))
    return 0


def _push(args: argparse.Namespace) -> int:
    from bundler import config
    from bundler.commands import push

    _log_to_stderr(args.verbose)
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: want at least 1")
    if not args.timeout > 0:
        raise UsageError(f"--timeout {args.timeout:g}: want a positive number of seconds")
    if args.print_registries and args.json:
        raise UsageError("--print-registries and --json both print on stdout; choose one")
    registries = config.load_registries(args.registries) if args.registries else None
    if args.max_inflation is not None and not args.max_inflation > 0:
        raise UsageError(f"--max-inflation {args.max_inflation:g}: want a positive ratio")
    checks = _signed_checks(args)
    with _renamed_hint(), _force_hint():
        result = push.push(args.bundle, args.to, registries=registries, jobs=args.jobs,
                           timeout=args.timeout, manifest=args.manifest,
                           require_checksum=args.require_checksum,
                           max_inflation=args.max_inflation, force=args.force, **checks)
    if args.print_registries:
        sys.stdout.write(result.registries_yaml)
    elif args.json:
        json.dump(result.as_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    if result.verified:
        print(f"pushed {_count(len(result.images), 'image')} to {args.to}: "
              f"{_count(result.uploaded, 'blob')} uploaded, {result.mounted} mounted, "
              f"{result.skipped} already there", file=sys.stderr)
    else:
        print(f"nothing to push: {args.to} already holds every image of {' '.join(args.bundle)} "
              f"({_count(result.skipped, 'blob')} and every tag); the bundle was read only up "
              f"to its metadata (bundler verify checks the whole file)", file=sys.stderr)
    return 0


def _images(args: argparse.Namespace) -> int:
    from bundler import chart, imagelist  # imported when used: only this command reads charts

    found = chart.images(args.chart, args.values, args.set)
    if not args.check:
        sys.stdout.write(chart.format_images(found, include_disabled=args.all))
        return 0
    listed = imagelist.read(args.check)
    drift = chart.check(found.selected(args.all), listed)
    for line in drift:
        print(f"{args.check}: {line}")
    if drift:
        return EXIT_FAILED
    print(f"OK {args.check}: in step with {found.name} {found.version} "
          f"({_count(len(listed), 'image')})")
    return 0


def _split_arguments(sp: argparse.ArgumentParser) -> None:
    from bundler.bundleformat import parts

    sp.add_argument("bundle", metavar="BUNDLE", help="the .tar.zst to cut")
    sp.add_argument("--size", default=str(parts.FAT32_MAX), metavar="SIZE",
                    help="the most bytes in one part: a number of bytes, or with a unit: kB, "
                         "MB, GB, TB (powers of 1000), KiB, MiB, GiB, TiB (powers of 1024) "
                         f"(default: {parts.FAT32_MAX}, 4 GiB - 1 byte, the most FAT32 holds)")
    sp.add_argument("-o", "--output-dir", metavar="DIR",
                    help="where the parts and the parts list go (default: beside the bundle)")
    sp.add_argument("--json", action="store_true", help="print the parts list on stdout")


def _join_arguments(jo: argparse.ArgumentParser) -> None:
    jo.add_argument("parts_list", metavar="PARTS-LIST", help="the NAME.parts.json split wrote")
    jo.add_argument("-o", "--output-dir", metavar="DIR",
                    help="where the bundle goes (default: beside the parts list)")
    jo.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def _split(args: argparse.Namespace) -> int:
    from bundler.commands import split

    try:
        size = split.parse_size(args.size)
    except ValueError as e:
        raise UsageError(f"--size {args.size!r}: {e}") from None
    path, listed = split.split(args.bundle, size, args.output_dir)
    if args.json:
        sys.stdout.write(json.dumps(split.describe(path), indent=2) + "\n")
    else:
        print(f"wrote {path}: {_count(len(listed.parts), 'part')} of at most {size} bytes, "
              f"{listed.size} bytes in all, sha256 {listed.sha256}")
    return 0


def _join(args: argparse.Namespace) -> int:
    from bundler.commands import split

    path, size, sha256 = split.join(args.parts_list, args.output_dir)
    if args.json:
        json.dump({"path": str(path), "size": size, "sha256": sha256}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"wrote {path}: {size} bytes, sha256 {sha256}")
    return 0
