"""Signatures in cosign's sign-blob format, checked by openssl as an independent verifier."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from bundler.bundleformat import signing
from bundler.bundleformat.signing import SignatureInvalid, SigningKeyError
from bundler.errors import EXIT_FAILED, EXIT_USAGE, EnvironmentFailure, InputError

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="openssl (Debian package openssl) is not installed")

MANIFEST = b'{"schemaVersion": 1, "bundle": {"sha256": "' + b"ab" * 32 + b'"}}\n'


def openssl(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                          check=check, timeout=60)


def keypair(d: Path, name: str = "key", algorithm: tuple[str, ...] = (
        "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")) -> tuple[Path, Path]:
    """A PKCS#8 private key and its public key, made by openssl, not by the code under test."""
    openssl("genpkey", *algorithm, "-out", f"{name}.pem", cwd=d)
    openssl("pkey", "-in", f"{name}.pem", "-pubout", "-out", f"{name}.pub", cwd=d)
    return d / f"{name}.pem", d / f"{name}.pub"


def openssl_verifies(d: Path, data: bytes, sig_b64: bytes, pub: Path) -> bool:
    (d / "data").write_bytes(data)
    (d / "sig.der").write_bytes(base64.b64decode(sig_b64))
    run = openssl("dgst", "-sha256", "-verify", str(pub), "-signature", "sig.der", "data",
                  cwd=d, check=False)
    assert (run.returncode == 0) == ("Verified OK" in run.stdout), run
    return run.returncode == 0


def test_openssl_verifies_what_we_sign_and_refuses_tampering(tmp_path):
    key, pub = keypair(tmp_path)
    sig = signing.sign(MANIFEST, key.read_bytes())
    assert b"\n" not in sig and base64.b64decode(sig, validate=True)  # cosign's .sig: one line
    assert openssl_verifies(tmp_path, MANIFEST, sig, pub)
    assert not openssl_verifies(tmp_path, MANIFEST.replace(b"ab", b"ac", 1), sig, pub)
    _, other_pub = keypair(tmp_path, "other")
    assert not openssl_verifies(tmp_path, MANIFEST, sig, other_pub)


def test_signing_is_deterministic(tmp_path):
    key, _ = keypair(tmp_path)
    assert signing.sign(MANIFEST, key.read_bytes()) == signing.sign(MANIFEST, key.read_bytes())


def test_we_verify_what_openssl_signs(tmp_path):
    key, pub = keypair(tmp_path)
    (tmp_path / "data").write_bytes(MANIFEST)
    openssl("dgst", "-sha256", "-sign", str(key), "-out", "sig.der", "data", cwd=tmp_path)
    sig = base64.b64encode((tmp_path / "sig.der").read_bytes()) + b"\n"
    signing.verify_signature(MANIFEST, sig, pub.read_bytes())


def test_tampered_data_wrong_key_and_garbage_are_refused(tmp_path):
    key, pub = keypair(tmp_path)
    _, other = keypair(tmp_path, "other")
    sig = signing.sign(MANIFEST, key.read_bytes())
    signing.verify_signature(MANIFEST, sig, pub.read_bytes())
    with pytest.raises(SignatureInvalid, match="does not match m.json under k.pub"):
        signing.verify_signature(MANIFEST + b" ", sig, pub.read_bytes(), data_name="m.json",
                                 key_name="k.pub")
    with pytest.raises(SignatureInvalid, match="does not match"):
        signing.verify_signature(MANIFEST, sig, other.read_bytes())
    with pytest.raises(SignatureInvalid, match="does not match"):
        signing.verify_signature(MANIFEST, base64.b64encode(b"\x30\x06garbage"), pub.read_bytes())
    with pytest.raises(SignatureInvalid, match="s.sig: not a base64 signature"):
        signing.verify_signature(MANIFEST, b"not base64!", pub.read_bytes(), signature_name="s.sig")
    with pytest.raises(SignatureInvalid, match="empty signature"):
        signing.verify_signature(MANIFEST, b"", pub.read_bytes())
    assert SignatureInvalid("x").exit_code == EXIT_FAILED


def test_encrypted_pkcs8_key_with_password(tmp_path):
    key, pub = keypair(tmp_path)
    openssl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", str(key), "-out", "enc.pem",
            "-passout", "pass:s3cret", cwd=tmp_path)
    enc = (tmp_path / "enc.pem").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in enc
    sig = signing.sign(MANIFEST, enc, b"s3cret")
    assert openssl_verifies(tmp_path, MANIFEST, sig, pub)
    with pytest.raises(SigningKeyError, match=r"k: encrypted; put its password in "
                                              r"\$BUNDLER_KEY_PASSWORD"):
        signing.sign(MANIFEST, enc, None, key_name="k")
    with pytest.raises(SigningKeyError, match="k: wrong password"):
        signing.sign(MANIFEST, enc, b"nope", key_name="k")
    with pytest.raises(SigningKeyError, match="not encrypted, but"):
        signing.sign(MANIFEST, key.read_bytes(), b"s3cret", key_name="k")
    assert signing.password_from_env({"BUNDLER_KEY_PASSWORD": "s3cret"}) == b"s3cret"
    assert signing.password_from_env({}) is None


@pytest.mark.parametrize("algorithm, description", [
    (("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"), "curve secp384r1"),
    (("-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"), "an RSA 2048-bit key"),
    (("-algorithm", "ED25519"), "Ed25519"),
])
def test_keys_other_than_p256_are_refused(tmp_path, algorithm, description):
    key, pub = keypair(tmp_path, "k", algorithm)
    with pytest.raises(SigningKeyError, match=f"k.pem: .*{description}.*P-256"):
        signing.sign(MANIFEST, key.read_bytes(), key_name="k.pem")
    with pytest.raises(SigningKeyError, match=f"k.pub: .*{description}.*P-256"):
        signing.verify_signature(MANIFEST, b"AAAA", pub.read_bytes(), key_name="k.pub")


def test_wrong_kinds_of_key_files(tmp_path):
    key, pub = keypair(tmp_path)
    with pytest.raises(SigningKeyError, match="a public key; signing needs the private key"):
        signing.sign(MANIFEST, pub.read_bytes())
    with pytest.raises(SigningKeyError, match="a private key; verify needs the public one"):
        signing.verify_signature(MANIFEST, b"AAAA", key.read_bytes())
    with pytest.raises(SigningKeyError, match="not a PEM private key"):
        signing.sign(MANIFEST, b"hello")
    with pytest.raises(SigningKeyError, match="not a PEM public key"):
        signing.verify_signature(MANIFEST, b"AAAA", b"-----BEGIN PUBLIC KEY-----\nxx\n")
    cosign = b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\neyJ9\n-----END ENCRYPTED" \
             b" SIGSTORE PRIVATE KEY-----\n"
    with pytest.raises(SigningKeyError, match="cosign's own encrypted key format"):
        signing.sign(MANIFEST, cosign)
    assert SigningKeyError("x").exit_code == EXIT_USAGE


def test_verify_file_unsigned_signed_and_changed(tmp_path):
    key, pub = keypair(tmp_path)
    manifest = tmp_path / "b-amd64.manifest.json"
    manifest.write_bytes(MANIFEST)
    with pytest.raises(SignatureInvalid, match=f"{manifest}: unsigned: no signature "
                                               f"{manifest}.sig"):
        signing.verify_file(manifest, pub)
    sig_path = signing.signature_path(manifest)
    assert sig_path.name == "b-amd64.manifest.json.sig"
    sig_path.write_bytes(signing.sign(MANIFEST, signing.read_key(key)))
    assert signing.verify_file(manifest, pub) == MANIFEST
    manifest.write_bytes(MANIFEST.replace(b"ab", b"ff", 1))
    with pytest.raises(SignatureInvalid, match=f"{sig_path}: the signature does not match "
                                               f"{manifest} under {pub}"):
        signing.verify_file(manifest, pub)
    sig_path.write_bytes(b"A" * (signing.MAX_SIGNATURE + 1))
    with pytest.raises(Exception, match="too large for a signature"):
        signing.verify_file(manifest, pub)
    with pytest.raises(SigningKeyError, match="no such key file"):
        signing.verify_file(manifest, tmp_path / "missing.pub")


def test_a_planted_symlink_is_not_followed_for_the_found_signature(tmp_path):
    key, pub = keypair(tmp_path)
    manifest = tmp_path / "m.json"
    manifest.write_bytes(MANIFEST)
    (tmp_path / "elsewhere.sig").write_bytes(signing.sign(MANIFEST, key.read_bytes()))
    signing.signature_path(manifest).symlink_to(tmp_path / "elsewhere.sig")
    with pytest.raises(Exception, match="is a symbolic link; not followed"):
        signing.verify_file(manifest, pub)
    signing.signature_path(manifest).unlink()
    (tmp_path / "real.json").write_bytes(MANIFEST)
    (tmp_path / "real.json.sig").write_bytes(signing.sign(MANIFEST, key.read_bytes()))
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    (tmp_path / "link.json.sig").write_bytes(signing.sign(MANIFEST, key.read_bytes()))
    assert signing.verify_file(tmp_path / "link.json", pub) == MANIFEST  # named by the user
    with pytest.raises(Exception, match="link.json: is a symbolic link; not followed"):
        signing.verify_file(tmp_path / "link.json", pub, signed_found=True)


# -- files that cannot be read: each error names the file, and says what kind it is -------------


def test_a_key_path_that_is_no_file_is_an_environment_failure(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(EnvironmentFailure) as e:
        signing.read_key(tmp_path / "afile" / "key.pem")
    assert str(e.value) == f"{tmp_path / 'afile'}: not a directory" and e.value.exit_code == 3
    with pytest.raises(SigningKeyError, match="no such key file"):
        signing.read_key(tmp_path / "missing.pem")


def test_a_key_file_is_read_up_to_its_cap_and_no_further(tmp_path):
    key = tmp_path / "key.pem"
    key.write_bytes(b"x" * signing.MAX_KEY)
    assert len(signing.read_key(key)) == signing.MAX_KEY
    key.write_bytes(b"x" * (signing.MAX_KEY + 1))
    with pytest.raises(InputError, match=f"more than {signing.MAX_KEY} bytes"):
        signing.read_key(key)


def test_what_verify_file_reads_is_named_when_it_cannot_be_read(tmp_path):
    _, pub = keypair(tmp_path)
    signed = tmp_path / "m.json"
    signed.write_text("{}")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(EnvironmentFailure, match=f"^{tmp_path / 'afile'}: not a directory$"):
        signing.verify_file(signed, pub, tmp_path / "afile" / "m.json.sig")
    sig = tmp_path / "given.sig"
    sig.write_bytes(b"x" * (signing.MAX_SIGNATURE + 1))
    with pytest.raises(InputError, match=f"more than {signing.MAX_SIGNATURE} bytes"):
        signing.verify_file(signed, pub, sig)
    sig.write_text("AAAA")
    with pytest.raises(InputError, match="no such file"):
        signing.verify_file(tmp_path / "gone.json", pub, sig)
    with pytest.raises(EnvironmentFailure, match=f"^{tmp_path / 'afile'}: not a directory$"):
        signing.verify_file(tmp_path / "afile" / "m.json", pub, sig)


def test_a_password_for_a_key_that_is_no_pem_is_not_called_wrong():
    not_pem = b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n"
    with pytest.raises(SigningKeyError, match="not a PEM private key"):
        signing.sign(b"data", not_pem, b"a password", key_name="k.pem")
