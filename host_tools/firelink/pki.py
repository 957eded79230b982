"""The site's certificate authority: a CA, the broker's server certificate and per-device
client certificates. Devices get DER copies (the MicroPython TLS stack rejects PEM)."""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS_CA = 3650
VALID_DAYS_LEAF = 825


@dataclass(frozen=True)
class Credential:
    """A certificate and its key, in both encodings."""

    cert_pem: bytes
    key_pem: bytes
    cert_der: bytes
    key_der: bytes

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.cert_der).hexdigest()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "FireLink"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _credential(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Credential:
    return Credential(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
        cert_der=cert.public_bytes(serialization.Encoding.DER),
        key_der=key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
    )


def _now() -> dt.datetime:
    # Back-dated a day so a device whose clock lags slightly still accepts it.
    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)


def make_ca(common_name: str = "FireLink site CA") -> Credential:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(_now())
            .not_valid_after(_now() + dt.timedelta(days=VALID_DAYS_CA))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return _credential(cert, key)


def _load(ca: Credential) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_der_x509_certificate(ca.cert_der)
    key = serialization.load_der_private_key(ca.key_der, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def _leaf(ca: Credential, cn: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]) -> Credential:
    ca_cert, ca_key = _load(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(_now()).not_valid_after(_now() + dt.timedelta(days=VALID_DAYS_LEAF))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return _credential(builder.sign(ca_key, hashes.SHA256()), key)


def make_server(ca: Credential, hostnames: list[str]) -> Credential:
    sans: list[x509.GeneralName] = []
    for h in hostnames:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    return _leaf(ca, hostnames[0], ExtendedKeyUsageOID.SERVER_AUTH, sans)


def make_client(ca: Credential, device_id: str) -> Credential:
    return _leaf(ca, device_id, ExtendedKeyUsageOID.CLIENT_AUTH, [])


def save(cred: Credential, directory: Path, stem: str) -> None:
    """Writes <stem>.crt/.key (PEM, for mosquitto) and <stem>.crt.der/.key.der (for devices); keys 0600."""
    directory.mkdir(parents=True, exist_ok=True)
    for suffix, data, private in ((".crt", cred.cert_pem, False), (".key", cred.key_pem, True),
                                  (".crt.der", cred.cert_der, False), (".key.der", cred.key_der, True)):
        path = directory / (stem + suffix)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)


def load(directory: Path, stem: str) -> Credential | None:
    paths = [directory / (stem + s) for s in (".crt", ".key", ".crt.der", ".key.der")]
    if not all(p.exists() for p in paths):
        return None
    return Credential(*(p.read_bytes() for p in paths))
