"""The sha256 of every file `bundler build` writes for the test images, in each mode.

A refactoring that must not change a byte of output is checked by running this before and
after it: `scripts/golden > before.json`, change, `scripts/golden --check before.json`.
The images are tests/conftest.py's generated ones (seeded, the same on every machine), served
by a real registry on loopback; the signing key is derived from a fixed number, so the .sig is
reproducible where the cryptography library signs deterministically (RFC 6979).
Compressed bytes depend on the zstd library: compare runs made with the same one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from tests.conftest import REFS, seed  # noqa: E402
from tests.servers import Registry  # noqa: E402

# name -> extra build arguments
CASES = {
    "preserve": ["--layers", "preserve"],
    "uncompressed": ["--layers", "uncompressed"],
    "multiarch": ["--layers", "preserve", "--arch", "amd64,arm64"],
    "signed-sbom": ["--layers", "uncompressed", "--sign-key", "{key}", "--sbom"],
}


def _key(directory: Path) -> Path:
    key = ec.derive_private_key(0x5EED, ec.SECP256R1())
    path = directory / "golden-key.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def hashes() -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="bundler-golden-") as d:
        tmp = Path(d)
        registry = Registry(tmp / "registry").start()
        try:
            fixture = seed(registry)
            key = _key(tmp)
            registries = fixture.registries_yaml(tmp)
            for case, extra in CASES.items():
                dist = tmp / case
                images = tmp / f"{case}.txt"
                # busybox is amd64 only: the multi-arch case takes the two indexes
                refs = REFS[:2] if "--arch" in extra else REFS
                images.write_text("".join(f"{r}\n" for r in refs))
                args = [a.replace("{key}", str(key)) for a in extra]
                done = subprocess.run(
                    [sys.executable, "-m", "bundler", "build", "--images", str(images),
                     "--output-dir", str(dist), "--registries", str(registries),
                     "--no-default-endpoint", "--quiet", "--no-cache", *args],
                    capture_output=True, text=True, cwd=ROOT,
                    env={**os.environ, "SOURCE_DATE_EPOCH": "1767225600"})
                if done.returncode != 0:
                    raise SystemExit(f"{case}: build failed: {done.stderr.strip()}")
                out[case] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                             for p in sorted(dist.iterdir())}
        finally:
            registry.stop()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", metavar="FILE", help="compare with an earlier run's output")
    args = parser.parse_args()
    now = hashes()
    if not args.check:
        json.dump(now, sys.stdout, indent=2, sort_keys=True)
        print()
        return 0
    before = json.loads(Path(args.check).read_text())
    differ = [f"{case}/{name}" for case in sorted(set(before) | set(now))
              for name in sorted(set(before.get(case, {})) | set(now.get(case, {})))
              if before.get(case, {}).get(name) != now.get(case, {}).get(name)]
    for item in differ:
        print(f"differs: {item}")
    print(f"{sum(len(v) for v in now.values())} files, {len(differ)} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
