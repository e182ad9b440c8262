"""Signatures over the checksum manifest, in the format `cosign sign-blob --key` writes.

A signature is ECDSA P-256 over SHA-256 of the file, DER-encoded, then base64 (no newline):
`cosign verify-blob --key cosign.pub --signature NAME.manifest.json.sig NAME.manifest.json`
and `openssl dgst -sha256 -verify pub.pem -signature <(base64 -d < SIG) FILE` both check it.
Keys are PEM: PKCS#8 (or SEC1) private keys, encrypted ones with a password, and
SubjectPublicKeyInfo public keys (what `cosign public-key` and `openssl pkey -pubout` print).

Signing is deterministic (RFC 6979), so the same manifest and key give the same .sig bytes,
like every other file a build writes.

The manifest is signed rather than the bundle: it names the bundle's sha256 and every image
digest, so one small signature vouches for all of it, and verify checks it before it trusts
any of the manifest's digests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from bundler import localfile
from bundler.errors import BundlerError, EnvironmentFailure, InputError

SIGNATURE_SUFFIX = ".sig"
# The environment variable an encrypted signing key's password is read from: a password on
# the command line would show in `ps` and in shell history.
PASSWORD_ENV = "BUNDLER_KEY_PASSWORD"
# A PEM key is a few hundred bytes; a base64 DER P-256 signature is at most 96 characters.
MAX_KEY = 64 << 10
MAX_SIGNATURE = 4 << 10
# A checksum manifest lists each layer in about 200 bytes; 64 MiB is far beyond any bundle.
MAX_SIGNED = 64 << 20
_CURVE = "secp256r1"


class SignatureInvalid(BundlerError):
    """A checksum manifest that is unsigned, or whose signature does not match (exit 1)."""


class SigningKeyError(InputError):
    """A key that cannot be used: unreadable, not PEM, not ECDSA P-256, wrong password (exit 2)."""


def signature_path(signed: str | Path) -> Path:
    """Where the signature of `signed` goes: `NAME.manifest.json.sig` beside it."""
    signed = Path(signed)
    return signed.with_name(signed.name + SIGNATURE_SUFFIX)


def password_from_env(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The signing key's password from $BUNDLER_KEY_PASSWORD; None when unset."""
    value = (os.environ if environ is None else environ).get(PASSWORD_ENV)
    return None if value is None else value.encode()


def read_key(path: str | Path) -> bytes:
    """A key file's bytes (a regular file of at most MAX_KEY bytes); errors name the file."""
    try:
        return localfile.read_small(Path(path), MAX_KEY, "PEM key")
    except FileNotFoundError:
        raise SigningKeyError(f"{path}: no such key file") from None
    except OSError as e:
        raise EnvironmentFailure.from_os_error(e, str(path)) from None


def sign(data: bytes, key_pem: bytes, password: bytes | None = None, *,
         key_name: str = "signing key") -> bytes:
    """The base64 of the DER ECDSA P-256 SHA-256 signature of `data`, as cosign writes it."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = _private_key(key_pem, password, key_name)
    try:
        signature = key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    except (TypeError, UnsupportedAlgorithm):
        # An older cryptography, or an OpenSSL before 3.2: a randomized signature, as valid
        # to every verifier, only not the same bytes twice.
        signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature)


def verify_signature(data: bytes, signature_b64: bytes, public_pem: bytes, *,
                     data_name: str = "data", signature_name: str = "signature",
                     key_name: str = "public key") -> None:
    """Return if `signature_b64` (cosign's format) signs `data` under `public_pem`; else
    SignatureInvalid (SigningKeyError for a key that is not a P-256 public key)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = _public_key(public_pem, key_name)
    try:
        der = base64.b64decode(b"".join(signature_b64.split()), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureInvalid(f"{signature_name}: not a base64 signature") from None
    if not der:
        raise SignatureInvalid(f"{signature_name}: empty signature")
    try:
        key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureInvalid(f"{signature_name}: the signature does not match {data_name} "
                               f"under {key_name}: not signed by that key, or changed since"
                               ) from None


def verify_file(signed: str | Path, key_path: str | Path,
                signature: str | Path | None = None, *, signed_found: bool = False) -> bytes:
    """Check the signature of the file `signed` (default: `signed`.sig beside it) under the
    public key in `key_path`; return the bytes that were checked, so the caller reads the
    file once and uses exactly what the signature covers.

    Files found rather than named by the user (the .sig always, `signed` with signed_found)
    are never read through a symlink, as verify treats every sidecar.
    """
    public_pem = read_key(key_path)
    sig_path = Path(signature) if signature is not None else signature_path(signed)
    try:
        sig = localfile.read_small(sig_path, MAX_SIGNATURE, "signature",
                                   follow_symlinks=signature is not None)
    except FileNotFoundError:
        raise SignatureInvalid(f"{signed}: unsigned: no signature {sig_path}") from None
    except OSError as e:
        raise EnvironmentFailure.from_os_error(e, str(sig_path)) from None
    try:
        data = localfile.read_small(Path(signed), MAX_SIGNED, "signed file",
                                    follow_symlinks=not signed_found)
    except FileNotFoundError:
        raise InputError(f"{signed}: no such file") from None
    except OSError as e:
        raise EnvironmentFailure.from_os_error(e, str(signed)) from None
    verify_signature(data, sig, public_pem, data_name=str(signed), signature_name=str(sig_path),
                     key_name=str(key_path))
    return data


def key_fingerprint(key_path: str | Path) -> str:
    """sha256:<hex> of the public key in `key_path` as DER (SubjectPublicKeyInfo): what
    `openssl pkey -pubin -in KEY -outform DER | sha256sum` prints, so a user can tell which
    key a signature was checked with."""
    from cryptography.hazmat.primitives import serialization

    key = _public_key(read_key(key_path), str(key_path))
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _private_key(pem: bytes, password: bytes | None, name: str):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if b"ENCRYPTED SIGSTORE PRIVATE KEY" in pem or b"ENCRYPTED COSIGN PRIVATE KEY" in pem:
        raise SigningKeyError(f"{name}: cosign's own encrypted key format is not read; use a "
                              "PKCS#8 PEM key (openssl genpkey -algorithm EC -pkeyopt "
                              "ec_paramgen_curve:P-256), which cosign also verifies against")
    if b"PUBLIC KEY-----" in pem and b"PRIVATE KEY-----" not in pem:
        raise SigningKeyError(f"{name}: a public key; signing needs the private key")
    try:
        key = serialization.load_pem_private_key(pem, password=password or None)
    except TypeError:
        if password:
            raise SigningKeyError(f"{name}: not encrypted, but ${PASSWORD_ENV} is set; unset "
                                  "it or encrypt the key") from None
        raise SigningKeyError(f"{name}: encrypted; put its password in ${PASSWORD_ENV}"
                              ) from None
    except ValueError:
        if password and b"ENCRYPTED" in pem:
            raise SigningKeyError(f"{name}: wrong password (from ${PASSWORD_ENV})") from None
        raise SigningKeyError(f"{name}: not a PEM private key (PKCS#8 or SEC1)") from None
    except Exception as e:  # unsupported algorithms raise their own types
        raise SigningKeyError(f"{name}: cannot be read ({type(e).__name__})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != _CURVE:
        raise SigningKeyError(f"{name}: {_describe(key)}; an ECDSA P-256 key is needed (the "
                              "key type cosign's signatures use)")
    return key


def _public_key(pem: bytes, name: str):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if b"PRIVATE KEY-----" in pem:
        raise SigningKeyError(f"{name}: a private key; verify needs the public one "
                              "(openssl pkey -in KEY -pubout, or cosign public-key)")
    try:
        key = serialization.load_pem_public_key(pem)
    except Exception:  # ValueError for bad PEM; unsupported algorithms raise their own
        raise SigningKeyError(f"{name}: not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != _CURVE:
        raise SigningKeyError(f"{name}: {_describe(key)}; an ECDSA P-256 key is needed")
    return key


def _describe(key: object) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return f"an ECDSA key on curve {key.curve.name}"
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return f"an RSA {key.key_size}-bit key"
    return f"a {type(key).__name__.lstrip('_')} key"
