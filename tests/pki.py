"""Test keys and certificates: a CA, server certs for 127.0.0.1, and the token signing key."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate(subject_key, cn: str, issuer_key=None, issuer_cert=None, ca: bool = False,
                ip: str | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_cert.subject if issuer_cert else _name(cn))
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
    return builder.sign(issuer_key or subject_key, hashes.SHA256())


def write_pem(path: Path, obj) -> Path:
    if isinstance(obj, x509.Certificate):
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(obj.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return path


def server_tls(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server cert, server key) for a server on 127.0.0.1."""
    ca_key = key()
    ca = certificate(ca_key, "bundler test CA", ca=True)
    srv_key = key()
    srv = certificate(srv_key, "127.0.0.1", ca_key, ca, ip="127.0.0.1")
    return (write_pem(directory / "ca.pem", ca), write_pem(directory / "server.pem", srv),
            write_pem(directory / "server-key.pem", srv_key))
