"""The Compose deployment's MongoDB users, passwords, keyfile and TLS certificates (the database half of
deploy/compose/credentials.py, which is the step to run; this file writes nothing by itself).

One user per platform service, ``readWrite`` on its own database ``pai_<service>`` only (the list of the
Kubernetes deployment's deploy/k8s/base/mongo/replicaset-init-job.yaml: the services on the bus and the
runtime, whose node agents share the ``runtime`` user), and ``root``, which only the mongo container (its
first start and its health check) and the one-shot ``mongo-users`` container use. What it writes into the
generated folder (0700; every file 0600 but the CA's certificate, which is public and must be readable by
the services' user):

    mongo-passwords.json  user -> password; running it again keeps them (--rotate: new ones, and the root's
                          old one under ``root_previous``, with which mongo-users logs in once to set it)
    mongo.env             the mongo container's MONGO_INITDB_ROOT_USERNAME/_PASSWORD (the image's entrypoint
                          creates root on an empty volume; the health check initiates the replica set)
    mongo-users.env       the one-shot container's settings (pai_common.mongo_provision)
    mongo-keyfile         the replica set's shared key (mongod with --keyFile: access control on)
    mongo-ca.crt (0644), mongo-ca.key   a CA made here, kept across runs
    mongo-server.pem      the server's certificate (hosts mongo, localhost, 127.0.0.1) and key
    and PAI_MONGO_URL in each platform container's <container>.env (credentials.py writes those)
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import secrets
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pai_common import bus_permissions
from pai_common.mongo_provision import PASSWORD_PREFIX, database

# Every platform service with a database: the ones on the bus and the node agents' runtime.
SERVICES = tuple(sorted((*bus_permissions.PLATFORM_SERVICES, "runtime")))
ROOT = "root"
PREVIOUS = "root_previous"
PASSWORDS = "mongo-passwords.json"
CA_CERT, CA_KEY, SERVER_PEM, KEYFILE = "mongo-ca.crt", "mongo-ca.key", "mongo-server.pem", "mongo-keyfile"
# Where compose.yaml mounts the CA's certificate in every client container.
CA_IN_CONTAINER = "/etc/pai/tls/mongo-ca.crt"
# The mongo container as clients reach it: one member, so a direct connection, over TLS.
HOST_URL = f"mongodb://mongo:27017/{{db}}?directConnection=true&tls=true&tlsCAFile={CA_IN_CONTAINER}"
SERVER_NAMES = ("mongo", "localhost")
SERVER_ADDRESSES = ("127.0.0.1",)


def service_url(service: str, password: str, host_url: str = HOST_URL) -> str:
    """A service's PAI_MONGO_URL: its own user, its own database (where the user is defined), TLS."""
    return bus_permissions.url_for(host_url.format(db=database(service)), service, password)


def passwords(old: Mapping[str, str], rotate: bool) -> dict[str, str]:
    """Every user's password: the former run's, or new ones with `rotate` (root's former one is then kept
    as ``root_previous``, with which mongo-users logs in once to set the new one; it stays until the next
    rotation, so `up` must run between two rotations)."""
    made = {user: secrets.token_urlsafe(32) for user in (ROOT, *SERVICES)}
    if not rotate:
        kept = {user: old.get(user, fresh) for user, fresh in made.items()}
        return kept | ({PREVIOUS: old[PREVIOUS]} if old.get(PREVIOUS) else {})
    return made | ({PREVIOUS: old[ROOT]} if old.get(ROOT) else {})


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    signer: ec.EllipticCurvePrivateKey,
    days: int,
    sans: x509.SubjectAlternativeName | None,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if sans is None:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(sans, critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


def tls_files(out: Path, existing: Mapping[str, bytes]) -> dict[str, bytes]:
    """The CA and the server's certificate it signs (both kept when there are): file name -> content."""
    if all(n in existing for n in (CA_CERT, CA_KEY, SERVER_PEM)):
        return {n: existing[n] for n in (CA_CERT, CA_KEY, SERVER_PEM)}
    if CA_KEY in existing and CA_CERT in existing:
        ca_key = serialization.load_pem_private_key(existing[CA_KEY], password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey), f"{out / CA_KEY} is not an EC key"
        ca = x509.load_pem_x509_certificate(existing[CA_CERT])
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate("openpai-py compose MongoDB CA", ca_key, None, ca_key, 3650, None)
    key = ec.generate_private_key(ec.SECP256R1())
    sans = x509.SubjectAlternativeName(
        [x509.DNSName(n) for n in SERVER_NAMES]
        + [x509.IPAddress(ipaddress.ip_address(a)) for a in SERVER_ADDRESSES]
    )
    server = _certificate("mongo", key, ca.subject, ca_key, 825, sans)
    return {
        CA_CERT: ca.public_bytes(serialization.Encoding.PEM),
        CA_KEY: _pem_key(ca_key),
        SERVER_PEM: server.public_bytes(serialization.Encoding.PEM) + _pem_key(key),
    }


def keyfile() -> bytes:
    """mongod's replica-set key: base64 characters, 6 to 1024 of them."""
    return base64.b64encode(secrets.token_bytes(756)) + b"\n"


def env_text(values: Mapping[str, str], comment: str) -> str:
    return f"# {comment}\n" + "".join(f"{k}={v}\n" for k, v in values.items())


def files(out: Path, stored: Mapping[str, str], rotate: bool) -> tuple[dict[str, str], dict[str, bytes]]:
    """(passwords, file name -> content) of everything the database needs but the containers' env files;
    `stored`: the former run's passwords (PASSWORDS in `out`)."""
    password = passwords(stored, rotate)
    existing = {
        n: (out / n).read_bytes() for n in (CA_CERT, CA_KEY, SERVER_PEM, KEYFILE) if (out / n).is_file()
    }
    written = tls_files(out, existing)
    written[KEYFILE] = existing.get(KEYFILE) or keyfile()
    written[PASSWORDS] = (json.dumps(password, indent=2, sort_keys=True) + "\n").encode()
    written["mongo.env"] = env_text(
        {"MONGO_INITDB_ROOT_USERNAME": ROOT, "MONGO_INITDB_ROOT_PASSWORD": password[ROOT]},
        "the mongo container's administrator (deploy/compose/mongo_users.py)",
    ).encode()
    provision = {
        "PAI_MONGO_PROVISION_URL": HOST_URL.format(db=""),
        "PAI_MONGO_ROOT_USER": ROOT,
        "PAI_MONGO_ROOT_PASSWORD": password[ROOT],
    }
    if password.get(PREVIOUS):
        provision["PAI_MONGO_ROOT_PASSWORD_PREVIOUS"] = password[PREVIOUS]
    provision |= {PASSWORD_PREFIX + s.upper(): password[s] for s in SERVICES}
    written["mongo-users.env"] = env_text(
        provision, "the mongo-users container's settings (pai_common.mongo_provision)"
    ).encode()
    return password, written


def container_env(platform: Mapping[str, str], password: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Compose container -> the PAI_MONGO_URL of its service's own user."""
    return {
        name: {"PAI_MONGO_URL": service_url(service, password[service])}
        for name, service in platform.items()
        if service in SERVICES
    }
