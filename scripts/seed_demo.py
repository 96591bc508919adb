#!/usr/bin/env python3
"""Seed a demo Cloud Map topology into a moto server (or any Cloud Map endpoint).

Run it with the venv of scripts/stack.sh:

    .venv/bin/python scripts/seed_demo.py --endpoint http://127.0.0.1:5000 \
        --sidecar-port 9469 [--prometheus-port 9090] [--summary-json FILE]

What it creates (every instance looks like one ECS registers for a task):

  namespace apps (HTTP)
    web        METRICS_PATH=/metrics METRICS_PORT=9100           3 tasks -> 3 targets
    api        METRICS_PATH=/actuator/prometheus (port from the
               instance's AWS_INSTANCE_PORT)                      2 tasks -> 2 targets
    worker     METRICS_PATH/METRICS_PORT + ECS_METRICS_PATH/
               ECS_METRICS_PORT (a second endpoint per task)      2 tasks -> 4 targets
    monitoring METRICS_PATH=/metrics, port from AWS_INSTANCE_PORT:
               the demo's own sidecar (and Prometheus when
               --prometheus-port is given) on 127.0.0.1, so
               Prometheus has targets that are UP                1-2 tasks -> 1-2 targets
  namespace internal.local (private DNS, dummy VPC)
    db-proxy   METRICS_PATH/METRICS_PORT + a named endpoint
               METRICS_PATH_admin/METRICS_PORT_admin             2 tasks -> 4 targets
    legacy     METRICS_PATH=/metrics METRICS_PORT=http
               (malformed: skipped with a warning)               2 tasks -> 0 targets
    cache      no tags at all (not scraped)                       2 tasks -> 0 targets

Other tasks get addresses in 127.0.0.0/8 other than 127.0.0.1: a local Prometheus tries
them and marks them DOWN at once (connection refused).

--churn: after seeding (or with --skip-seed, on a server seeded before), every
--churn-every seconds register one more `web` task, then deregister it again, so the
sidecar's file visibly changes. Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:  # pragma: no cover - depends on the interpreter used
    sys.exit(
        "seed_demo: boto3 is not importable by this python; run scripts/stack.sh install "
        "and use .venv/bin/python"
    )

HTTP_NAMESPACE = "apps"
DNS_NAMESPACE = "internal.local"
DEMO_VPC = "vpc-0dec0de0cafe00001"
CLUSTER_APPS = "demo-apps"
CLUSTER_BACKEND = "demo-backend"
CHURN_SERVICE = "web"


@dataclass
class ServiceSpec:
    """One Cloud Map service of the demo and the tasks registered in it."""

    name: str
    namespace: str
    cluster: str
    tags: dict[str, str]
    # (ipv4, AWS_INSTANCE_PORT) for each task
    tasks: list[tuple[str, int]]
    # targets the sidecar should write for this service
    expected_targets: int
    note: str
    family: str = ""
    registered: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.family:
            self.family = f"{self.name}-task"


def topology(sidecar_port: int, prometheus_port: int | None) -> list[ServiceSpec]:
    monitoring_tasks = [("127.0.0.1", sidecar_port)]
    if prometheus_port:
        monitoring_tasks.append(("127.0.0.1", prometheus_port))
    return [
        ServiceSpec(
            name="web",
            namespace=HTTP_NAMESPACE,
            cluster=CLUSTER_APPS,
            tags={"METRICS_PATH": "/metrics", "METRICS_PORT": "9100", "team": "frontend"},
            tasks=[("127.0.0.2", 8080), ("127.0.0.3", 8080), ("127.0.0.4", 8080)],
            expected_targets=3,
            note="METRICS_PATH + METRICS_PORT",
        ),
        ServiceSpec(
            name="api",
            namespace=HTTP_NAMESPACE,
            cluster=CLUSTER_APPS,
            tags={"METRICS_PATH": "/actuator/prometheus"},
            tasks=[("127.0.0.5", 8081), ("127.0.0.6", 8081)],
            expected_targets=2,
            note="port from AWS_INSTANCE_PORT",
        ),
        ServiceSpec(
            name="worker",
            namespace=HTTP_NAMESPACE,
            cluster=CLUSTER_APPS,
            tags={
                "METRICS_PATH": "/metrics",
                "METRICS_PORT": "9102",
                "ECS_METRICS_PATH": "/metrics",
                "ECS_METRICS_PORT": "9779",
            },
            tasks=[("127.0.0.7", 8082), ("127.0.0.8", 8082)],
            expected_targets=4,
            note="+ ECS_METRICS_PATH/ECS_METRICS_PORT endpoint",
        ),
        ServiceSpec(
            name="monitoring",
            namespace=HTTP_NAMESPACE,
            cluster=CLUSTER_APPS,
            tags={"METRICS_PATH": "/metrics"},
            tasks=monitoring_tasks,
            expected_targets=len(monitoring_tasks),
            note="the demo's own sidecar"
            + (" and Prometheus" if prometheus_port else "")
            + " on 127.0.0.1 (UP)",
            family="prometheus-with-cloudmap-sd",
        ),
        ServiceSpec(
            name="db-proxy",
            namespace=DNS_NAMESPACE,
            cluster=CLUSTER_BACKEND,
            tags={
                "METRICS_PATH": "/metrics",
                "METRICS_PORT": "9103",
                "METRICS_PATH_admin": "/admin/metrics",
                "METRICS_PORT_admin": "9901",
            },
            tasks=[("127.0.0.9", 6432), ("127.0.0.10", 6432)],
            expected_targets=4,
            note="+ named endpoint METRICS_PATH_admin/METRICS_PORT_admin",
        ),
        ServiceSpec(
            name="legacy",
            namespace=DNS_NAMESPACE,
            cluster=CLUSTER_BACKEND,
            tags={"METRICS_PATH": "/metrics", "METRICS_PORT": "http"},
            tasks=[("127.0.0.11", 8000), ("127.0.0.12", 8000)],
            expected_targets=0,
            note="malformed METRICS_PORT=http: skipped with a warning",
        ),
        ServiceSpec(
            name="cache",
            namespace=DNS_NAMESPACE,
            cluster=CLUSTER_BACKEND,
            tags={},
            tasks=[("127.0.0.13", 6379), ("127.0.0.14", 6379)],
            expected_targets=0,
            note="untagged: not scraped",
        ),
    ]


class Seeder:
    def __init__(self, endpoint: str, region: str, seed: int) -> None:
        # Dummy credentials unless the environment has some: moto accepts anything.
        if not (os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE")):
            os.environ["AWS_ACCESS_KEY_ID"] = "test"
            os.environ["AWS_SECRET_ACCESS_KEY"] = "test"
        self.endpoint = endpoint.rstrip("/")
        self.region = region
        self.rng = random.Random(seed)
        # DiscoverInstances carries the host prefix `data-`; against a local endpoint
        # that would resolve data-127.0.0.1, so it must not be injected.
        self.sd = boto3.client(
            "servicediscovery",
            endpoint_url=self.endpoint,
            region_name=region,
            config=Config(inject_host_prefix=False, retries={"max_attempts": 3, "mode": "standard"}),
        )

    # ids -----------------------------------------------------------------

    def task_id(self) -> str:
        """A 32-hex id like the task id ECS uses as the Cloud Map instance id."""
        return f"{self.rng.getrandbits(128):032x}"

    def az(self, i: int) -> str:
        return f"{self.region}{'abc'[i % 3]}"

    # namespaces and services ----------------------------------------------

    def namespace_ids(self) -> dict[str, str]:
        out: dict[str, str] = {}
        kwargs: dict = {}
        while True:
            page = self.sd.list_namespaces(**kwargs)
            for ns in page.get("Namespaces", []):
                out[ns["Name"]] = ns["Id"]
            token = page.get("NextToken")
            if not token:
                return out
            kwargs["NextToken"] = token

    def service_ids(self, namespace_id: str) -> dict[str, str]:
        out: dict[str, str] = {}
        kwargs: dict = {"Filters": [{"Name": "NAMESPACE_ID", "Values": [namespace_id], "Condition": "EQ"}]}
        while True:
            page = self.sd.list_services(**kwargs)
            for svc in page.get("Services", []):
                # moto ignores the filter, and a ServiceSummary names no namespace:
                # check it with GetService.
                ns = svc.get("NamespaceId") or self.sd.get_service(Id=svc["Id"])["Service"]["NamespaceId"]
                if ns == namespace_id:
                    out[svc["Name"]] = svc["Id"]
            token = page.get("NextToken")
            if not token:
                return out
            kwargs["NextToken"] = token

    def namespace_from_operation(self, operation_id: str, name: str) -> str:
        for _ in range(60):
            op = self.sd.get_operation(OperationId=operation_id)["Operation"]
            if op["Status"] == "SUCCESS":
                return op["Targets"]["NAMESPACE"]
            if op["Status"] == "FAIL":
                raise RuntimeError(f"creating namespace {name} failed: {op.get('ErrorMessage')}")
            time.sleep(0.5)
        raise RuntimeError(f"creating namespace {name}: operation {operation_id} did not finish")

    def create_namespaces(self) -> dict[str, str]:
        existing = self.namespace_ids()
        clash = [n for n in (HTTP_NAMESPACE, DNS_NAMESPACE) if n in existing]
        if clash:
            raise RuntimeError(
                f"namespace(s) {', '.join(clash)} already exist on {self.endpoint}; "
                "reset the server first (--reset, or POST /moto-api/reset)"
            )
        ids = {}
        op = self.sd.create_http_namespace(
            Name=HTTP_NAMESPACE, Description="cloudmap-sd demo: HTTP namespace"
        )["OperationId"]
        ids[HTTP_NAMESPACE] = self.namespace_from_operation(op, HTTP_NAMESPACE)
        op = self.sd.create_private_dns_namespace(
            Name=DNS_NAMESPACE, Vpc=DEMO_VPC, Description="cloudmap-sd demo: private DNS namespace"
        )["OperationId"]
        ids[DNS_NAMESPACE] = self.namespace_from_operation(op, DNS_NAMESPACE)
        return ids

    def create_service(self, spec: ServiceSpec, namespace_id: str) -> str:
        kwargs: dict = {
            "Name": spec.name,
            "NamespaceId": namespace_id,
            "Description": f"cloudmap-sd demo: {spec.note}",
            # ECS registers tasks with a custom health check
            "HealthCheckCustomConfig": {"FailureThreshold": 1},
        }
        if spec.tags:
            kwargs["Tags"] = [{"Key": k, "Value": v} for k, v in spec.tags.items()]
        if spec.namespace == DNS_NAMESPACE:
            kwargs["DnsConfig"] = {
                "RoutingPolicy": "MULTIVALUE",
                "DnsRecords": [{"Type": "A", "TTL": 10}],
            }
        return self.sd.create_service(**kwargs)["Service"]["Id"]

    # instances ---------------------------------------------------------------

    def attributes(self, spec: ServiceSpec, ip: str, port: int, index: int) -> dict[str, str]:
        return {
            "AWS_INSTANCE_IPV4": ip,
            "AWS_INSTANCE_PORT": str(port),
            "AWS_INIT_HEALTH_STATUS": "HEALTHY",
            "AVAILABILITY_ZONE": self.az(index),
            "ECS_CLUSTER_NAME": spec.cluster,
            "ECS_SERVICE_NAME": spec.name,
            "ECS_TASK_DEFINITION_FAMILY": spec.family,
            "REGION": self.region,
        }

    def register(
        self, service_id: str, spec: ServiceSpec, ip: str, port: int, index: int, instance_id: str = ""
    ) -> str:
        instance_id = instance_id or self.task_id()
        self.sd.register_instance(
            ServiceId=service_id,
            InstanceId=instance_id,
            Attributes=self.attributes(spec, ip, port, index),
        )
        spec.registered.append(instance_id)
        return instance_id

    def seed(self, specs: list[ServiceSpec]) -> dict:
        ns_ids = self.create_namespaces()
        services = []
        for spec in specs:
            service_id = self.create_service(spec, ns_ids[spec.namespace])
            for i, (ip, port) in enumerate(spec.tasks):
                self.register(service_id, spec, ip, port, i)
            services.append(
                {
                    "namespace": spec.namespace,
                    "service": spec.name,
                    "service_id": service_id,
                    "tags": spec.tags,
                    "instances": len(spec.registered),
                    "instance_ids": list(spec.registered),
                    "expected_targets": spec.expected_targets,
                    "note": spec.note,
                }
            )
        return {
            "endpoint": self.endpoint,
            "region": self.region,
            "namespaces": ns_ids,
            "services": services,
            "expected_targets": sum(s["expected_targets"] for s in services),
            "expected_services": sorted(s["service"] for s in services if s["expected_targets"] > 0),
        }

    def verify(self, summary: dict) -> None:
        """Read back through DiscoverInstances what was seeded; raise on a mismatch."""
        for svc in summary["services"]:
            found = self.sd.discover_instances(
                NamespaceName=svc["namespace"],
                ServiceName=svc["service"],
                HealthStatus="HEALTHY_OR_ELSE_ALL",
                MaxResults=1000,
            )["Instances"]
            ids = sorted(i["InstanceId"] for i in found)
            if ids != sorted(svc["instance_ids"]):
                raise RuntimeError(
                    f"{svc['namespace']}/{svc['service']}: DiscoverInstances returned {ids}, "
                    f"expected {sorted(svc['instance_ids'])}"
                )

    # churn -------------------------------------------------------------------

    def churn(self, every: float) -> None:
        ns_ids = self.namespace_ids()
        if HTTP_NAMESPACE not in ns_ids:
            raise RuntimeError(f"namespace {HTTP_NAMESPACE} not found on {self.endpoint}: seed first")
        service_id = self.service_ids(ns_ids[HTTP_NAMESPACE]).get(CHURN_SERVICE)
        if not service_id:
            raise RuntimeError(f"service {HTTP_NAMESPACE}/{CHURN_SERVICE} not found: seed first")
        spec = next(s for s in topology(1, None) if s.name == CHURN_SERVICE)
        extra: str | None = None
        n = 0
        print(f"churn: every {every:g}s, register then deregister one extra "
              f"{HTTP_NAMESPACE}/{CHURN_SERVICE} task (Ctrl-C stops)", flush=True)
        try:
            while True:
                time.sleep(every)
                stamp = time.strftime("%H:%M:%S")
                if extra is None:
                    ip = f"127.0.0.{100 + n % 100}"
                    # fresh random ids: moto duplicates an instance registered twice
                    extra = self.register(service_id, spec, ip, 8080, n, secrets.token_hex(16))
                    print(f"{stamp} churn: registered {CHURN_SERVICE} task {extra} at {ip}", flush=True)
                    n += 1
                else:
                    self.sd.deregister_instance(ServiceId=service_id, InstanceId=extra)
                    print(f"{stamp} churn: deregistered {CHURN_SERVICE} task {extra}", flush=True)
                    extra = None
        finally:
            # leave the service as it was seeded
            if extra is not None:
                try:
                    self.sd.deregister_instance(ServiceId=service_id, InstanceId=extra)
                    print(f"churn: stopped; deregistered {CHURN_SERVICE} task {extra}", flush=True)
                except (ClientError, BotoCoreError) as e:
                    print(f"churn: could not deregister {extra}: {e}", file=sys.stderr, flush=True)


def reset(endpoint: str) -> None:
    req = urllib.request.Request(endpoint.rstrip("/") + "/moto-api/reset", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def print_summary(summary: dict) -> None:
    print(f"seeded {summary['endpoint']} ({summary['region']}):")
    for name, ns_id in summary["namespaces"].items():
        print(f"  namespace {name} ({ns_id})")
        for s in (s for s in summary["services"] if s["namespace"] == name):
            tags = " ".join(f"{k}={v}" for k, v in s["tags"].items()) or "(no tags)"
            print(
                f"    {s['service']:<11} {s['instances']} tasks -> {s['expected_targets']} targets"
                f"   {tags}"
            )
    print(
        f"expected: {summary['expected_targets']} targets from services "
        f"{', '.join(summary['expected_services'])}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", required=True, help="e.g. http://127.0.0.1:5000 (moto server)")
    p.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    p.add_argument("--sidecar-port", type=int, default=9469,
                   help="port of the demo's cloudmap-sd /metrics on 127.0.0.1 (default 9469)")
    p.add_argument("--prometheus-port", type=int, default=None,
                   help="port of the demo's Prometheus on 127.0.0.1: also registered as a target")
    p.add_argument("--summary-json", metavar="FILE", help="also write the summary as JSON here")
    p.add_argument("--reset", action="store_true", help="POST /moto-api/reset first (moto only)")
    p.add_argument("--skip-seed", action="store_true", help="seed nothing (with --churn)")
    p.add_argument("--churn", action="store_true",
                   help="then keep registering/deregistering one task until interrupted")
    p.add_argument("--churn-every", type=float, default=10.0, metavar="SECONDS")
    p.add_argument("--seed", type=int, default=20240601,
                   help="random seed of the task ids (same seed, same ids)")
    args = p.parse_args()

    for name in ("sidecar_port", "prometheus_port"):
        v = getattr(args, name)
        if v is not None and not 1 <= v <= 65535:
            p.error(f"--{name.replace('_', '-')} {v}: not a port")
    if args.skip_seed and not args.churn:
        p.error("--skip-seed only makes sense with --churn")

    # SIGTERM ends like Ctrl-C, so --churn cleans up after itself
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    seeder = Seeder(args.endpoint, args.region, args.seed)
    try:
        if args.reset:
            reset(args.endpoint)
        if not args.skip_seed:
            summary = seeder.seed(topology(args.sidecar_port, args.prometheus_port))
            seeder.verify(summary)
            print_summary(summary)
            if args.summary_json:
                tmp = args.summary_json + ".tmp"
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump(summary, f, indent=2, sort_keys=True)
                    f.write("\n")
                os.replace(tmp, args.summary_json)
            sys.stdout.flush()
        if args.churn:
            seeder.churn(args.churn_every)
    except KeyboardInterrupt:
        return 0
    except (ClientError, BotoCoreError, urllib.error.URLError, OSError, RuntimeError) as e:
        print(f"seed_demo: error against {args.endpoint}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
