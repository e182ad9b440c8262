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
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self.complete()
        return super().format_usage()

    def format_help(self) -> str:
        self.complete()
        return super().format_help()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bundler",
        description="Build, verify and place K3s airgap image bundles (one zstd image tarball).",
    )
    p.add_argument("--version", action="version", version=f"bundler {__version__}")
    # -v works before or after the subcommand; SUPPRESS keeps a subcommand's default from
    # undoing a -v given before it.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="also say what is retried and why, and where images come from "
                              "(on stderr)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also say what is retried and why (on stderr)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           parser_class=_Command)

    sub.add_parser("build", parents=[verbose], arguments=_build_arguments,
                   help="pull the images of an image list into one .tar.zst bundle",
                   description="Pull the images of an image list for one platform and write "
                               "one zstd-compressed image tarball K3s imports, with its "
                               "image list and checksum files.").set_defaults(run=_build)
    sub.add_parser("verify", parents=[verbose], arguments=_verify_arguments,
                   help="check a bundle offline: checksums, zstd, tar, digests",
                   description="Check a bundle in one streaming pass, with no network: its "
                               "checksum files, zstd frames, tar members, every blob and "
                               "layer digest, and the image metadata.").set_defaults(run=_verify)
    sub.add_parser("place", parents=[verbose], arguments=_place_arguments,
                   help="verify a bundle and put it into K3s's agent/images",
                   description="Verify a bundle, then copy it into the directory K3s (or "
                               "RKE2) imports images from, atomically: K3s never sees a "
                               "partial file. The .txt image list is not copied."
                   ).set_defaults(run=_place)
    sub.add_parser("inspect", parents=[verbose], arguments=_inspect_arguments,
                   help="list the images of a bundle from its metadata",
                   description="Show the images of a bundle (platform, manifest and "
                               "config digests, layers and sizes) from the metadata at "
                               "its front, without decompressing it whole. Use verify "
                               "to check it.").set_defaults(run=_inspect)
    sub.add_parser("push", parents=[verbose], arguments=_push_arguments,
                   help="verify a bundle and push its images into a registry",
                   description="Stream a bundle once, verifying it as verify does, and "
                               "push every blob, then every manifest by digest, then the "
                               "tags, into a registry; images keep their manifest "
                               "digests. A bundle that does not verify pushes no "
                               "manifest.").set_defaults(run=_push)
    sub.add_parser("images", parents=[verbose], arguments=_images_arguments,
                   help="list the images a Helm chart pins in its values (templates are "
                        "not rendered)",
                   description="Print, in images.txt format, the images a Helm chart pins "
                               "in its values and its subcharts' values (repository + tag, "
                               "registry, digest; global.systemDefaultRegistry; a missing "
                               "tag is the chart's appVersion), with Helm's rules for "
                               "--values and --set. Templates are NOT rendered: an image "
                               "written only inside a template is not found."
                   ).set_defaults(run=_images)
    return p


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


def _inspect_arguments(ins: argparse.ArgumentParser) -> None:
    ins.add_argument("bundle", metavar="BUNDLE", help="the .tar.zst to inspect")
    ins.add_argument("--sizes", action="store_true",
                     help="also read a compact (--layers uncompressed) bundle's layer sizes, by "
                          "decompressing it whole (a preserve bundle's are always shown)")
    ins.add_argument("--json", action="store_true", help="print JSON on stdout")


def _push_arguments(pu: argparse.ArgumentParser) -> None:
    from bundler.registry import endpoint

    pu.add_argument("bundle", metavar="BUNDLE", help="the .tar.zst to push")
    pu.add_argument("--to", required=True, metavar="HOST[/PREFIX]",
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
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif not args.quiet:
        for one in result.get("bundles", [result]):
            b = one["bundle"]
            print(f"wrote {one['files'][0]}: {_count(len(one['images']), 'image')}, "
                  f"{b['size']} bytes, sha256 {b['sha256']}", file=sys.stderr)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from bundler.checks import verify

    if not args.max_inflation > 0:
        raise UsageError(f"--max-inflation {args.max_inflation:g}: want a positive ratio")
    with _renamed_hint():
        report = verify.verify(args.bundle, args.manifest,
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
    with _renamed_hint():
        done = place.place(args.bundle, target, dry_run=args.dry_run, **checks)
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
        return
    shown = report.problems[:_MAX_PROBLEMS]
    for problem in shown:
        print(f"{report.file}: {problem}")
    if report.problem_count > len(shown):
        print(f"{report.file}: ... and {_count(report.problem_count - len(shown), 'more problem')}")
    print(f"FAILED {report.file}: {_count(report.problem_count, 'problem')}")


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
        return _fail(str(e), e.exit_code)
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
    from bundler.commands import inspect as inspection

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
    with _renamed_hint():
        result = push.push(args.bundle, args.to, registries=registries, jobs=args.jobs,
                           timeout=args.timeout, manifest=args.manifest,
                           require_checksum=args.require_checksum,
                           max_inflation=args.max_inflation, **checks)
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
        print(f"nothing to push: {args.to} already holds every image of {args.bundle} "
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
