#!/usr/bin/env python3
"""Small helpers of scripts/demo.sh (standard library only).

    demo_util.py ports N                 print N free TCP ports on 127.0.0.1
    demo_util.py http-status URL [--any] exit 0 when URL answers 200 (--any: any HTTP answer)
    demo_util.py post URL                POST an empty body; exit 0 on a 2xx answer
    demo_util.py check --file F --summary S --prometheus URL --sidecar ADDR [--timeout T]
                                         verify a running demo end to end
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
import urllib.error
import urllib.request

LABEL = "cloudmap_service"


def free_ports(n: int) -> list[int]:
    # Hold every socket until all are bound, so the ports differ.
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def http(url: str, method: str = "GET", timeout: float = 3.0) -> tuple[int, bytes]:
    """(status, body); status 0 when nothing answered."""
    req = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


class Checker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.failed = 0

    def ok(self, msg: str) -> None:
        print(f"  ok    {msg}", flush=True)

    def fail(self, component: str, msg: str) -> None:
        self.failed += 1
        print(f"  FAIL  [{component}] {msg}", flush=True)

    def check_file(self, summary: dict) -> int | None:
        """Checks the targets file against the seeded topology; its target count."""
        path = self.args.file
        try:
            with open(path, encoding="utf-8") as f:
                groups = json.load(f)
        except (OSError, ValueError) as e:
            self.fail("cloudmap-sd", f"targets file {path}: {e}")
            return None
        if not isinstance(groups, list) or not all(
            isinstance(g, dict) and isinstance(g.get("targets"), list) for g in groups
        ):
            self.fail("cloudmap-sd", f"{path} is not a file_sd list of {{targets, labels}} groups")
            return None
        expected = summary["expected_targets"]
        total = sum(len(g["targets"]) for g in groups)
        services = sorted({g.get("labels", {}).get(LABEL, "") for g in groups})
        if total == expected:
            self.ok(f"targets file has {total} targets in {len(groups)} groups ({path})")
        else:
            self.fail("cloudmap-sd", f"targets file has {total} targets, expected {expected} ({path})")
        if services == summary["expected_services"]:
            self.ok(f"{LABEL} labels: {', '.join(services)}")
        else:
            self.fail(
                "cloudmap-sd",
                f"{LABEL} labels are {services}, expected {summary['expected_services']}",
            )
        # non-primary endpoints (ECS_METRICS_*, METRICS_*_admin) carry metrics_endpoint
        for svc in ("worker", "db-proxy"):
            extra = [g for g in groups if g.get("labels", {}).get(LABEL) == svc
                     and g.get("labels", {}).get("metrics_endpoint")]
            if extra:
                names = sorted({g["labels"]["metrics_endpoint"] for g in extra})
                self.ok(f"{svc}: extra endpoint(s) with metrics_endpoint={','.join(names)}")
            else:
                self.fail("cloudmap-sd", f"{svc}: no target with a metrics_endpoint label")
        if any(self.args.sidecar in g["targets"] for g in groups):
            self.ok(f"the sidecar's own address {self.args.sidecar} is a target")
        else:
            self.fail("cloudmap-sd", f"no target with the sidecar's own address {self.args.sidecar}")
        return total

    def active_targets(self) -> list[dict] | None:
        status, body = http(self.args.prometheus.rstrip("/") + "/api/v1/targets?state=active")
        if status != 200:
            return None
        try:
            return json.loads(body)["data"]["activeTargets"]
        except (ValueError, KeyError):
            return None

    def check_prometheus(self, expected: int, deadline: float) -> None:
        """Prometheus shows as many targets as the file has (when it could be read)."""
        targets: list[dict] | None = None
        ours: list[dict] = []
        while True:
            targets = self.active_targets()
            if targets is not None:
                ours = [t for t in targets if LABEL in t.get("labels", {})]
            if len(ours) == expected or time.monotonic() > deadline:
                break
            time.sleep(1)
        url = self.args.prometheus.rstrip("/") + "/api/v1/targets"
        if targets is None:
            self.fail("prometheus", f"{url} did not answer with a target list")
            return
        if len(ours) != expected:
            self.fail("prometheus", f"{len(ours)} active targets with label {LABEL}, expected {expected} ({url})")
            return
        self.ok(f"Prometheus has {len(ours)} active targets with label {LABEL}")
        # The sidecar scraping itself proves the whole path: Cloud Map -> file -> scrape.
        sidecar = self.args.sidecar
        while True:
            mine = [t for t in ours if t.get("labels", {}).get("instance") == sidecar
                    or t.get("discoveredLabels", {}).get("__address__") == sidecar]
            up = [t for t in mine if t.get("health") == "up"]
            if up or time.monotonic() > deadline:
                break
            time.sleep(1)
            ours = [t for t in (self.active_targets() or []) if LABEL in t.get("labels", {})]
        if up:
            self.ok(f"target {sidecar} (the sidecar itself) is UP")
        elif mine:
            health = mine[0].get("health")
            err = mine[0].get("lastError")
            self.fail("prometheus", f"target {sidecar} is {health}: {err}")
        else:
            self.fail("prometheus", f"no active target with address {sidecar}")
        counts: dict[str, int] = {}
        for t in ours:
            counts[t.get("health", "?")] = counts.get(t.get("health", "?"), 0) + 1
        print("        target health: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))

    def run(self) -> int:
        with open(self.args.summary, encoding="utf-8") as f:
            summary = json.load(f)
        deadline = time.monotonic() + self.args.timeout
        in_file = self.check_file(summary)
        self.check_prometheus(summary["expected_targets"] if in_file is None else in_file, deadline)
        return 1 if self.failed else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ports")
    s.add_argument("n", type=int)
    s = sub.add_parser("http-status")
    s.add_argument("url")
    s.add_argument("--any", action="store_true", help="any HTTP answer counts")
    s = sub.add_parser("post")
    s.add_argument("url")
    s = sub.add_parser("check")
    s.add_argument("--file", required=True)
    s.add_argument("--summary", required=True)
    s.add_argument("--prometheus", required=True, help="base URL of Prometheus")
    s.add_argument("--sidecar", required=True, help="host:port of the sidecar")
    s.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args()

    if args.cmd == "ports":
        print(" ".join(str(x) for x in free_ports(args.n)))
        return 0
    if args.cmd == "http-status":
        status, _ = http(args.url)
        print(status)
        return 0 if (status == 200 or (args.any and status)) else 1
    if args.cmd == "post":
        status, body = http(args.url, method="POST", timeout=10)
        if 200 <= status < 300:
            return 0
        print(f"POST {args.url}: status {status or 'no answer'} {body[:200]!r}", file=sys.stderr)
        return 1
    return Checker(args).run()


if __name__ == "__main__":
    sys.exit(main())
