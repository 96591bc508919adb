#!/usr/bin/env python3
"""Small helpers of scripts/demo.sh (standard library only).

    demo_util.py ports N                 print N free TCP ports on 127.0.0.1
    demo_util.py http-status URL [--any] exit 0 when URL answers 200 (--any: any HTTP answer)
    demo_util.py post URL                POST an empty body; exit 0 on a 2xx answer
    demo_util.py ui URL                  the UI pages this Prometheus serves, as shell
                                         assignments (UI_TARGETS=... UI_SD=... UI_GRAPH=...)
    demo_util.py json FILE KEY           print one top-level value of a JSON file
    demo_util.py churn --ctx FILE [--hold S] [--every S]
                                         add a task, watch it come up, let it run, remove
                                         it, watch it go (again and again with --every)
    demo_util.py check --ctx FILE [--timeout T]
                                         verify a running demo end to end

FILE (--ctx) is the JSON that demo.sh writes: the URLs, paths and commands of the
running demo.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

LABEL = "cloudmap_service"
CHURN_SERVICE = ("apps", "web")


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


def ui_pages(base: str) -> dict[str, str]:
    """The UI pages this Prometheus really serves: Prometheus 3 and the 2.x builds
    with the React UI serve /targets; Debian's 2.x build has only /classic/..."""
    base = base.rstrip("/")
    expr = "g0.expr=" + urllib.parse.quote("up") + "&g0.tab="
    if http(base + "/targets")[0] == 200:
        graph = "/query?" + expr + "table" if http(base + "/query")[0] == 200 else "/graph?" + expr + "1"
        return {"UI_TARGETS": "/targets", "UI_SD": "/service-discovery", "UI_GRAPH": graph}
    if http(base + "/classic/targets")[0] == 200:
        return {
            "UI_TARGETS": "/classic/targets",
            "UI_SD": "/classic/service-discovery",
            "UI_GRAPH": "/classic/graph?" + expr + "1",
        }
    raise SystemExit(f"demo_util: {base} serves neither /targets nor /classic/targets")


def metric(text: str, name: str, labels: str = "") -> float | None:
    """The value of one sample of the exposition `text` (labels as written)."""
    want = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


class Demo:
    """The running demo, as demo.sh describes it in the context file."""

    def __init__(self, ctx: dict) -> None:
        self.ctx = ctx
        with open(ctx["summary"], encoding="utf-8") as f:
            self.summary = json.load(f)
        self.prometheus = ctx["prometheus"].rstrip("/")
        self.amp = ctx["amp"].rstrip("/")

    def service(self, namespace: str, name: str) -> dict:
        return next(s for s in self.summary["services"]
                    if s["namespace"] == namespace and s["service"] == name)

    def file_groups(self, key: str = "targets_file") -> list[dict] | None:
        try:
            with open(self.ctx[key], encoding="utf-8") as f:
                groups = json.load(f)
        except (OSError, ValueError):
            return None
        ok = isinstance(groups, list) and all(
            isinstance(g, dict) and isinstance(g.get("targets"), list) for g in groups)
        return groups if ok else None

    def file_addresses(self) -> set[str]:
        return {t for g in self.file_groups() or [] for t in g["targets"]}

    def active(self, job: str) -> list[dict] | None:
        status, body = http(self.prometheus + "/api/v1/targets?state=active")
        if status != 200:
            return None
        try:
            targets = json.loads(body)["data"]["activeTargets"]
        except (ValueError, KeyError):
            return None
        return [t for t in targets if t.get("scrapePool") == job]

    def sidecar_metrics(self) -> str:
        status, body = http(f"http://{self.ctx['sidecar']}/metrics")
        return body.decode() if status == 200 else ""

    def seed(self, flag: str, ip: str) -> str:
        ns, name = CHURN_SERVICE
        out = subprocess.run(
            [self.ctx["seed_bin"], "--endpoint", self.summary["endpoint"], flag, f"{ns}/{name}@{ip}"],
            capture_output=True, text=True, timeout=60, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"seed {flag} failed: {out.stderr.strip()}")
        return out.stdout.strip()


def wait(deadline: float, what, interval: float = 0.5):
    """Polls `what` until it returns something true, or the deadline; its last value."""
    while True:
        v = what()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


def address(t: dict) -> str:
    return t.get("discoveredLabels", {}).get("__address__", "")


# ------------------------------------------------------------------ churn


def churn_step(demo: Demo, ip: str, say, hold: float = 0.0, timeout: float = 90.0) -> list[str]:
    """Starts one more web task at `ip`, waits until Prometheus scrapes it, lets it
    run `hold` seconds more, stops it, waits until it is gone; what went wrong
    (empty: nothing)."""
    web = demo.service(*CHURN_SERVICE)
    target = f"{ip}:{web['tags']['METRICS_PORT']}"
    problems = []
    t0 = time.monotonic()
    deadline = t0 + timeout

    def since() -> str:
        return f"{time.monotonic() - t0:4.1f}s"

    task = demo.seed("--add-task", ip)
    say(f"+ started apps/web task {task} at {ip} (ECS RunTask, Cloud Map RegisterInstance)")
    if wait(deadline, lambda: target in demo.file_addresses()):
        say(f"  {since()}  in the targets file ({target})")
    else:
        problems.append(f"{target} never reached the targets file")
    up = wait(deadline, lambda: [t for t in demo.active("cloudmap-sd") or []
                                 if address(t) == target and t.get("health") == "up"])
    if up:
        say(f"  {since()}  UP on Prometheus's targets page")
    else:
        problems.append(f"{target} never came up in Prometheus")
    time.sleep(hold)
    t0 = time.monotonic()
    deadline = t0 + timeout
    demo.seed("--remove-task", ip)
    say(f"- stopped apps/web task {task} (Cloud Map DeregisterInstance, ECS StopTask)")
    if wait(deadline, lambda: target not in demo.file_addresses()):
        say(f"  {since()}  gone from the targets file")
    else:
        problems.append(f"{target} stayed in the targets file")
    if wait(deadline, lambda: (a := demo.active("cloudmap-sd")) is not None
            and all(address(t) != target for t in a)):
        say(f"  {since()}  gone from Prometheus")
    else:
        problems.append(f"{target} stayed in Prometheus")
    return problems


def churn(demo: Demo, hold: float, every: float | None) -> int:
    spare = demo.service(*CHURN_SERVICE)["spare"]
    n = 0
    while True:
        ip = spare[n % len(spare)]
        problems = churn_step(demo, ip, lambda m: print(f"churn: {m}", flush=True), hold)
        for p in problems:
            print(f"churn: PROBLEM: {p}", flush=True)
        if every is None:
            return 1 if problems else 0
        n += 1
        time.sleep(every)


# ------------------------------------------------------------------ check


class Checker:
    def __init__(self, demo: Demo, timeout: float) -> None:
        self.demo = demo
        self.deadline = time.monotonic() + timeout
        self.failed = 0

    def ok(self, msg: str) -> None:
        print(f"  ok    {msg}", flush=True)

    def fail(self, component: str, msg: str) -> None:
        self.failed += 1
        print(f"  FAIL  [{component}] {msg}", flush=True)

    def expect(self, cond: bool, component: str, good: str, bad: str) -> bool:
        (self.ok(good) if cond else self.fail(component, bad))
        return cond

    # The targets file: what the sidecar found, with ECS and EC2 facts.
    def check_file(self) -> None:
        s = self.demo.summary
        groups = self.demo.file_groups()
        path = self.demo.ctx["targets_file"]
        if groups is None:
            self.fail("cloudmap-sd", f"{path} is missing or not a file_sd list")
            return
        total = sum(len(g["targets"]) for g in groups)
        self.expect(total == s["expected_targets"], "cloudmap-sd",
                    f"targets file has {total} targets ({path})",
                    f"targets file has {total} targets, expected {s['expected_targets']} ({path})")
        services = sorted({g["labels"].get(LABEL, "") for g in groups})
        self.expect(services == s["expected_services"], "cloudmap-sd",
                    f"{LABEL} labels: {', '.join(services)}",
                    f"{LABEL} labels are {services}, expected {s['expected_services']}")
        for svc in ("worker", "db-proxy"):
            names = sorted({g["labels"]["metrics_endpoint"] for g in groups
                            if g["labels"].get(LABEL) == svc and "metrics_endpoint" in g["labels"]})
            self.expect(bool(names), "cloudmap-sd",
                        f"{svc}: extra endpoint(s) with metrics_endpoint={','.join(names)}",
                        f"{svc}: no target with a metrics_endpoint label")
        self.check_ecs_labels(groups)

    def check_ecs_labels(self, groups: list[dict]) -> None:
        hosts = {h["instance_id"]: h["name"] for h in self.demo.summary["hosts"]}
        for svc in self.demo.summary["services"]:
            mine = [g["labels"] for g in groups if g["labels"].get(LABEL) == svc["service"]]
            lt = svc.get("launch_type")
            if not mine or not lt:
                continue
            bad = [l for l in mine if l.get("ecs_launch_type") != lt
                   or (lt == "EC2" and hosts.get(l.get("ec2_instance_id")) != l.get("ec2_name"))
                   or (lt == "FARGATE" and "ec2_instance_id" in l)]
            where = "ec2_name = its host's Name tag" if lt == "EC2" else "no ec2_* labels"
            self.expect(not bad, "cloudmap-sd",
                        f"{svc['service']}: ecs_launch_type={lt}, {where}",
                        f"{svc['service']}: wrong ECS/EC2 labels: {bad[:1]}")

    def check_hosts_file(self) -> None:
        s = self.demo.summary
        port = s["host_serves"][0][0]
        want = sorted((f"{h['ip']}:{port}", h["name"]) for h in s["hosts"])
        groups = self.demo.file_groups("hosts_file") or []
        got = sorted((g["targets"][0], g["labels"].get("instance")) for g in groups)
        self.expect(got == want, "cloudmap-sd",
                    f"EC2 hosts file: {len(got)} hosts, instance = the host's Name tag",
                    f"EC2 hosts file has {got}, expected {want}")

    # Prometheus: every target up but the ones broken on purpose.
    def broken_on_purpose(self, t: dict) -> str | None:
        """Why target t is down on purpose, or None when it must be up."""
        labels = t.get("labels", {})
        svc = next((s for s in self.demo.summary["services"]
                    if s["service"] == labels.get(LABEL)
                    and s["namespace"] == labels.get("cloudmap_namespace")), None)
        if svc is None or svc["serves"] is None:
            return None
        host, port = address(t).rsplit(":", 1)
        path = t.get("discoveredLabels", {}).get("__metrics_path__", "")
        served = any(int(port) == p and path == pth for p, pth in svc["serves"])
        return None if served else (svc.get("broken") or "not served")

    def settled(self, job: str, expected: int) -> list[dict] | None:
        """The job's targets once there are `expected` of them, each in the state
        it should be in (up, or down when broken on purpose)."""
        targets = self.demo.active(job)
        if targets is None or len(targets) != expected:
            return None
        for t in targets:
            want = "down" if self.broken_on_purpose(t) else "up"
            if t.get("health") != want:
                return None
        return targets

    def check_prometheus(self) -> None:
        expected = self.demo.summary["expected_targets"]
        targets = wait(self.deadline, lambda: self.settled("cloudmap-sd", expected), 1.0)
        if not targets:
            targets = self.demo.active("cloudmap-sd") or []
            for t in targets:
                want = "down" if self.broken_on_purpose(t) else "up"
                if t.get("health") != want:
                    self.fail("prometheus", f"{address(t)} ({t['labels'].get(LABEL)}) is "
                              f"{t.get('health')}, expected {want}: {t.get('lastError')}")
            self.fail("prometheus", f"job cloudmap-sd: {len(targets)} targets, expected "
                      f"{expected}, each up but the ones broken on purpose")
            return
        down = [t for t in targets if self.broken_on_purpose(t)]
        self.ok(f"Prometheus job cloudmap-sd: {len(targets) - len(down)} of {len(targets)} "
                f"targets UP, real /metrics")
        self.expect(bool(down), "demo", f"{len(down)} DOWN on purpose:",
                    "nothing is broken on purpose: the demo should show a down target")
        for t in down:
            print(f"          {address(t)} {t['labels'].get(LABEL)} "
                  f"{t['labels'].get('metrics_endpoint', '')}: {t.get('lastError')}")
        hosts = len(self.demo.summary["hosts"])
        got = wait(self.deadline, lambda: self.settled("ec2-hosts", hosts), 1.0)
        self.expect(bool(got), "prometheus", f"Prometheus job ec2-hosts: {hosts} of {hosts} UP",
                    f"job ec2-hosts: {len(self.demo.active('ec2-hosts') or [])} targets, "
                    f"expected {hosts}, all up")

    # The sidecar's own view: remote write ok, the probe accepted, its gauges.
    def sidecar_says(self, name: str, labels: str) -> str | None:
        """The sidecar's metrics once `name{labels}` is 1 (None until then)."""
        m = self.demo.sidecar_metrics()
        return m if metric(m, name, labels) == 1 else None

    def check_sidecar(self) -> None:
        m = wait(self.deadline,
                 lambda: self.sidecar_says("cloudmap_sd_remote_write_state", 'state="ok"'), 1.0)
        if not m:
            m = self.demo.sidecar_metrics()
            state = [l for l in m.splitlines()
                     if l.startswith("cloudmap_sd_remote_write_state{") and l.endswith(" 1")]
            self.fail("cloudmap-sd", f"remote-write watch is not ok: {state}")
        else:
            self.ok('remote-write watch: cloudmap_sd_remote_write_state{state="ok"} 1')
        m = wait(self.deadline,
                 lambda: self.sidecar_says("cloudmap_sd_amp_probe_result", 'result="accepted"'), 1.0)
        self.expect(bool(m), "cloudmap-sd", 'AMP probe of the stand-in: result="accepted"',
                    "cloudmap_sd_amp_probe_result is not accepted")
        m = self.demo.sidecar_metrics()
        s = self.demo.summary
        for name, want in (("cloudmap_sd_targets", s["expected_targets"]),
                           ("cloudmap_sd_services", len(s["expected_services"])),
                           ("cloudmap_sd_ready", 1)):
            got = metric(m, name)
            self.expect(got == want, "cloudmap-sd", f"{name} {int(want)}",
                        f"{name} is {got}, expected {want}")

    def check_log(self) -> None:
        with open(self.demo.ctx["sidecar_log"], encoding="utf-8", errors="replace") as f:
            lines = [l for l in f if "endpoint skipped" in l and "service=legacy" in l]
        self.expect(bool(lines) and 'instance=""' not in lines[0], "cloudmap-sd",
                    "legacy's malformed tag: one warning in the log",
                    f"no clean skip warning for legacy in {self.demo.ctx['sidecar_log']}: {lines}")

    # The AMP stand-in: what Prometheus remote-wrote.
    def check_amp(self) -> None:
        q = urllib.parse.quote('count(up{job="cloudmap-sd",cluster="demo"} == 1)')

        def count() -> int:
            status, body = http(f"{self.demo.amp}/api/v1/query?query={q}")
            try:
                return int(json.loads(body)["data"]["result"][0]["value"][1]) if status == 200 else 0
            except (ValueError, KeyError, IndexError):
                return 0
        expected = len([t for t in self.demo.active("cloudmap-sd") or []
                        if not self.broken_on_purpose(t)])
        got = wait(self.deadline, lambda: count() == expected and expected, 1.0)
        self.expect(bool(got), "amp stand-in",
                    f"the AMP stand-in holds up == 1 for those {expected} targets (remote write)",
                    f"the AMP stand-in has {count()} targets up, expected {expected}")

    def check_churn(self) -> None:
        ip = self.demo.service(*CHURN_SERVICE)["spare"][0]
        problems = churn_step(self.demo, ip, lambda m: print(f"        churn: {m}", flush=True))
        self.expect(not problems, "churn", "a task added, scraped, removed: in and out of the "
                    "file and Prometheus", "; ".join(problems))

    def check_urls(self) -> None:
        bad = [(u, s) for u in self.demo.ctx["urls"] if (s := http(u)[0]) != 200]
        self.expect(not bad, "demo", f"the {len(self.demo.ctx['urls'])} URLs printed answer 200",
                    f"printed URLs that do not answer 200: {bad}")

    def check_commands(self) -> None:
        ctx = self.demo.ctx
        for cmd in ctx["commands"]:
            tool = cmd.split(" ", 1)[0]
            if tool in ("aws", "curl") and not shutil.which(tool):
                print(f"  note  not run, {tool} is not on PATH: {cmd}")
                continue
            out = subprocess.run(["bash", "-c", f"{ctx['exports']}\n{cmd}"], capture_output=True,
                                 text=True, timeout=120, check=False, env=clean_env())
            self.expect(out.returncode == 0, "commands", f"printed command works: {cmd[:90]}",
                        f"`{cmd}` exited {out.returncode}: {(out.stderr or out.stdout)[-500:]}")
        n = len(json.load(open(ctx["once_file"], encoding="utf-8")))
        self.expect(n == self.demo.summary["expected_targets"], "commands",
                    f"the once command wrote {n} targets", f"the once command wrote {n} targets")

    # http_sd: /sd/targets serves the file's bytes.
    def check_http_sd(self) -> None:
        url = f"http://{self.demo.ctx['sidecar']}/sd/targets"
        path = self.demo.ctx["targets_file"]

        last = {"status": 0}

        def equal() -> bool:
            status, body = http(url)
            last["status"] = status
            with open(path, "rb") as f:
                return status == 200 and body == f.read()
        ok = bool(wait(self.deadline, equal))
        status = last["status"]
        self.expect(ok, "cloudmap-sd", f"{url} answers 200 with the targets file's bytes",
                    f"{url} answered {status}" + (", not the file's bytes" if status == 200 else ""))

    def run(self) -> int:
        self.check_file()
        self.check_hosts_file()
        self.check_prometheus()
        self.check_sidecar()
        self.check_http_sd()
        self.check_log()
        self.check_amp()
        self.check_churn()
        self.check_urls()
        self.check_commands()
        return 1 if self.failed else 0


def clean_env() -> dict[str, str]:
    """This environment without AWS settings: the printed commands bring theirs."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CLOUDMAP_SD_"))}


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
    s = sub.add_parser("ui")
    s.add_argument("url")
    s = sub.add_parser("json")
    s.add_argument("file")
    s.add_argument("key")
    s = sub.add_parser("churn")
    s.add_argument("--ctx", required=True)
    s.add_argument("--hold", type=float, default=0.0, help="seconds the task runs once up")
    s.add_argument("--every", type=float, help="again, this many seconds after each step")
    s = sub.add_parser("check")
    s.add_argument("--ctx", required=True)
    s.add_argument("--timeout", type=float, default=120.0)
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
    if args.cmd == "ui":
        for k, v in ui_pages(args.url).items():
            print(f"{k}='{v}'")
        return 0
    if args.cmd == "json":
        with open(args.file, encoding="utf-8") as f:
            print(json.load(f)[args.key])
        return 0
    with open(args.ctx, encoding="utf-8") as f:
        demo = Demo(json.load(f))
    if args.cmd == "churn":
        return churn(demo, args.hold, args.every)
    return Checker(demo, args.timeout).run()


if __name__ == "__main__":
    sys.exit(main())
