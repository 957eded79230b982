"""The site's certificate authority: a CA, the broker's server certificate and per-device
client certificates. Devices get DER copies (the MicroPython TLS stack rejects PEM).

A device certificate's CN is its device id: the broker's TLS listener takes it only with that
username and the account's password (mosquitto_plugin/fl_certbind.c). The CA key signs every credential of the site: it can be
encrypted with a passphrase ($FL_CA_PASSPHRASE when it is made, or `firelink broker
--protect-ca`) and kept offline between provisioning sessions (docs/threat-model.md)."""
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

from firelink.errors import FireLinkError

VALID_DAYS_CA = 3650
VALID_DAYS_LEAF = 825
RENEW_DAYS = 60  # a certificate closer than this to its end is reported for renewal
PASSPHRASE_ENV = "FL_CA_PASSPHRASE"


class PKIError(FireLinkError, RuntimeError):
    pass


def ca_passphrase() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value else None


def common_name(cert_der: bytes) -> str:
    cert = x509.load_der_x509_certificate(cert_der)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def not_after(cert_der: bytes) -> dt.datetime:
    """When the certificate stops being valid (UTC)."""
    cert = x509.load_der_x509_certificate(cert_der)
    return cert.not_valid_after_utc


def days_left(cert_der: bytes, now: dt.datetime | None = None) -> float:
    now = now or dt.datetime.now(dt.timezone.utc)
    return (not_after(cert_der) - now).total_seconds() / 86400


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


def save(cred: Credential, directory: Path, stem: str, with_key: bool = True,
         passphrase: bytes | None = None) -> None:
    """Writes <stem>.crt/.key (PEM, for mosquitto) and <stem>.crt.der/.key.der (for devices); keys 0600,
    encrypted with `passphrase` when given; with_key=False writes the certificate only."""
    directory.mkdir(parents=True, exist_ok=True)
    key_pem, key_der = cred.key_pem, cred.key_der
    if passphrase:
        key = serialization.load_der_private_key(cred.key_der, password=None)
        enc = serialization.BestAvailableEncryption(passphrase)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
        key_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, enc)
    files = [(".crt", cred.cert_pem, False), (".crt.der", cred.cert_der, False)]
    if with_key:
        files += [(".key", key_pem, True), (".key.der", key_der, True)]
    for suffix, data, private in files:
        path = directory / (stem + suffix)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)


def serial_of(cert_der: bytes) -> int:
    return int(x509.load_der_x509_certificate(cert_der).serial_number)


def make_crl(ca: Credential, serials: list[int]) -> bytes:
    """The CA's revocation list (PEM) of these certificate serials, valid as long as the CA: the
    broker refuses a listed certificate at the TLS handshake."""
    ca_cert, ca_key = _load(ca)
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(now - dt.timedelta(days=1)).next_update(ca_cert.not_valid_after_utc))
    for serial in sorted(set(serials)):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now - dt.timedelta(minutes=1)).build())
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def load_ca(directory: Path, passphrase: bytes | None = None) -> Credential:
    """The CA with its key in clear (in memory only). PKIError says what is missing: the key kept
    offline, or its passphrase."""
    crt = directory / "ca.crt"
    key_path = directory / "ca.key"
    if not key_path.exists():
        raise PKIError(f"the site CA's key is not in {directory} (kept offline?): put ca.key back for this step "
                       "and take it away again after (docs/threat-model.md)")
    passphrase = passphrase if passphrase is not None else ca_passphrase()
    pem = key_path.read_bytes()
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase if b"ENCRYPTED" in pem else None)
    except (TypeError, ValueError):
        raise PKIError(f"the site CA's key is protected: set ${PASSPHRASE_ENV} to its passphrase"
                       if b"ENCRYPTED" in pem else f"{key_path} is not a private key") from None
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return _credential(cert, key)


def protect_key(directory: Path, stem: str, passphrase: bytes) -> None:
    """Encrypts <stem>.key/.key.der in place with `passphrase` (already protected: PKIError)."""
    pem = (directory / (stem + ".key")).read_bytes()
    if b"ENCRYPTED" in pem:
        raise PKIError(f"{directory / (stem + '.key')} is already protected")
    cert = x509.load_pem_x509_certificate((directory / (stem + ".crt")).read_bytes())
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    save(_credential(cert, key), directory, stem, passphrase=passphrase)


def load(directory: Path, stem: str) -> Credential | None:
    paths = [directory / (stem + s) for s in (".crt", ".key", ".crt.der", ".key.der")]
    if not all(p.exists() for p in paths):
        return None
    return Credential(*(p.read_bytes() for p in paths))
