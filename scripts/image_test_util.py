#!/usr/bin/env python3
"""Helpers of scripts/image-test.sh (run with the repository's .venv python).

    image_test_util.py port                          print a free TCP port on 127.0.0.1
    image_test_util.py certs DIR NAME                write a test CA (ca.pem) and a server
                                                     certificate for NAME and 127.0.0.1
                                                     (server.pem, server-key.pem) into DIR
    image_test_util.py dns ADDR NAME IP LOG          a tiny DNS server on ADDR:53: A NAME -> IP,
                                                     NXDOMAIN for other names; logs queries
    image_test_util.py wait-https URL CA [SECONDS]   wait until URL answers over TLS
    image_test_util.py seed URL CA REGION            a Cloud Map namespace, a tagged service
                                                     and one instance; prints them as JSON
    image_test_util.py wait-file FILE ADDRESS PATH [SECONDS]
                                                     wait until the file_sd FILE has a target
                                                     ADDRESS with __metrics_path__ PATH
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import socket
import ssl
import struct
import sys
import time
import urllib.error
import urllib.request

NAMESPACE = "image-test"
SERVICE = "app"
INSTANCE_IP = "10.20.30.40"
METRICS_PORT = "9100"
METRICS_PATH = "/metrics"


def free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def write_certs(out_dir: str, name: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloudmap-sd image test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    def write(path: str, data: bytes, mode: int) -> None:
        with open(os.path.join(out_dir, path), "wb") as f:
            f.write(data)
        os.chmod(os.path.join(out_dir, path), mode)

    pem = serialization.Encoding.PEM
    write("ca.pem", ca_cert.public_bytes(pem), 0o644)
    write("server.pem", cert.public_bytes(pem), 0o644)
    write(
        "server-key.pem",
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        0o600,
    )


def serve_dns(addr: str, name: str, ip: str, log_path: str) -> None:
    """Answers A queries for `name` with `ip`; NOERROR/no data for its other types;
    NXDOMAIN for every other name. One line per query in `log_path`."""
    want = name.lower().rstrip(".")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, 53))
    with open(log_path, "a", buffering=1) as log:
        log.write(f"listening on {addr}:53\n")
        while True:
            data, peer = sock.recvfrom(512)
            try:
                labels, i = [], 12
                while data[i]:
                    labels.append(data[i + 1 : i + 1 + data[i]].decode("ascii"))
                    i += data[i] + 1
                qtype = struct.unpack(">H", data[i + 1 : i + 3])[0]
                question = data[12 : i + 5]
            except (IndexError, UnicodeDecodeError, struct.error):
                continue
            qname = ".".join(labels).lower()
            flags = 0x8180  # response, recursion desired + available, NOERROR
            answers = b""
            if qname != want:
                flags |= 3  # NXDOMAIN
            elif qtype == 1:
                answers = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 5, 4) + socket.inet_aton(ip)
            header = data[:2] + struct.pack(">HHHHH", flags, 1, 1 if answers else 0, 0, 0)
            sock.sendto(header + question + answers, peer)
            log.write(f"query {qname} type {qtype} from {peer[0]}: {'answered' if answers else 'no address'}\n")


def wait_https(url: str, ca: str, seconds: float) -> int:
    ctx = ssl.create_default_context(cafile=ca)
    deadline = time.monotonic() + seconds
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
                resp.read()
                return 0
        except urllib.error.HTTPError:
            return 0  # any HTTP answer over verified TLS will do
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        time.sleep(0.3)
    print(f"{url} did not answer over TLS within {seconds:.0f}s: {last}", file=sys.stderr)
    return 1


def seed(url: str, ca: str, region: str) -> int:
    import boto3
    from botocore.config import Config

    sd = boto3.client(
        "servicediscovery",
        endpoint_url=url,
        region_name=region,
        verify=ca,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(inject_host_prefix=False),
    )
    sd.create_http_namespace(Name=NAMESPACE)
    ns_id = next(n["Id"] for n in sd.list_namespaces()["Namespaces"] if n["Name"] == NAMESPACE)
    svc = sd.create_service(
        Name=SERVICE,
        NamespaceId=ns_id,
        Tags=[
            {"Key": "METRICS_PATH", "Value": METRICS_PATH},
            {"Key": "METRICS_PORT", "Value": METRICS_PORT},
        ],
    )["Service"]
    sd.register_instance(
        ServiceId=svc["Id"],
        InstanceId="task-1",
        Attributes={"AWS_INSTANCE_IPV4": INSTANCE_IP},
    )
    found = sd.discover_instances(NamespaceName=NAMESPACE, ServiceName=SERVICE)["Instances"]
    if [i["InstanceId"] for i in found] != ["task-1"]:
        print(f"seed: moto returned {found}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "namespace": NAMESPACE,
                "service": SERVICE,
                "address": f"{INSTANCE_IP}:{METRICS_PORT}",
                "metrics_path": METRICS_PATH,
            }
        )
    )
    return 0


def wait_file(path: str, address: str, metrics_path: str, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    last = "the file does not exist"
    while time.monotonic() < deadline:
        try:
            with open(path, encoding="utf-8") as f:
                groups = json.load(f)
            for g in groups:
                if address in g.get("targets", []) and g.get("labels", {}).get("__metrics_path__") == metrics_path:
                    print(json.dumps(g, sort_keys=True))
                    return 0
            last = f"no target {address} with __metrics_path__ {metrics_path} in {json.dumps(groups)}"
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            last = f"unreadable: {e}"
        time.sleep(0.5)
    print(f"{path}: {last} (after {seconds:.0f}s)", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[0], argv[1:]
    if cmd == "port" and not args:
        print(free_port())
        return 0
    if cmd == "certs" and len(args) == 2:
        write_certs(args[0], args[1])
        return 0
    if cmd == "dns" and len(args) == 4:
        serve_dns(*args)
        return 0
    if cmd == "wait-https" and len(args) in (2, 3):
        return wait_https(args[0], args[1], float(args[2]) if len(args) == 3 else 30)
    if cmd == "seed" and len(args) == 3:
        return seed(*args)
    if cmd == "wait-file" and len(args) in (3, 4):
        return wait_file(args[0], args[1], args[2], float(args[3]) if len(args) == 4 else 30)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
