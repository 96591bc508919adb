"""Checks run by scripts/terraform-test.sh after `terraform apply` on moto server.

Each sub-command prints one line per check and exits non-zero on the first failure.

  resources OUTPUTS_JSON        what the modules created, read back from moto
  drift PLAN_JSON               a second plan changes nothing but known moto gaps
  init-script OUTPUTS_JSON      run the init container's script locally (fake task
                                metadata endpoint), promtool-check its prometheus.yml
  discover OUTPUTS_JSON BIN     register an instance in the tagged service, run
                                `cloudmap-sd once --output -`, find the target

Environment: MOTO_URL (http://127.0.0.1:PORT).
"""

import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading

import boto3
import yaml
from botocore.config import Config

REGION = "us-east-1"
ACCOUNT = "123456789012"


def client(service, **config):
    return boto3.client(
        service,
        endpoint_url=os.environ["MOTO_URL"],
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(**config) if config else None,
    )


def check(cond, what):
    if not cond:
        print(f"  FAIL {what}")
        sys.exit(1)
    print(f"  ok   {what}")


def outputs(path):
    with open(path) as f:
        return {k: v["value"] for k, v in json.load(f).items()}


def task_def(arn):
    td = client("ecs").describe_task_definition(taskDefinition=arn)["taskDefinition"]
    return td, {c["name"]: c for c in td["containerDefinitions"]}


def env_of(container):
    return {e["name"]: e["value"] for e in container.get("environment", [])}


def policy_statements(role, name):
    doc = client("iam").get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    if isinstance(doc, str):
        doc = json.loads(doc)
    out = []
    for st in doc["Statement"]:
        acts = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        out.append({"sid": st.get("Sid"), "actions": set(acts), "resources": res,
                    "condition": st.get("Condition")})
    return out


# ---------------------------------------------------------------------------


def cmd_resources(path):
    out = outputs(path)
    sd = client("servicediscovery")

    print("Cloud Map: the scrape-target module's tags")
    web = sd.get_service(Id=out["web_service_id"])["Service"]
    tags = {t["Key"]: t["Value"] for t in sd.list_tags_for_resource(ResourceARN=web["Arn"])["Tags"]}
    check(tags.get("METRICS_PATH") == "/internal/metrics", "web: METRICS_PATH=/internal/metrics")
    check(tags.get("METRICS_PORT") == "9102", "web: METRICS_PORT=9102")
    check(tags.get("METRICS_SCHEME") == "http", "web: METRICS_SCHEME=http")
    check(tags.get("METRICS_PATH_envoy") == "/stats/prometheus" and tags.get("METRICS_PORT_envoy") == "9901",
          "web: named endpoint envoy")
    quiet = sd.get_service(Id=out["quiet_service_id"])["Service"]
    qtags = sd.list_tags_for_resource(ResourceARN=quiet["Arn"])["Tags"]
    check(not any(t["Key"].startswith("METRICS_") for t in qtags), "quiet (prometheus_enabled=false): no METRICS_* tags")

    fg, ec2 = out["fargate"], out["ec2"]
    print("ECS task definition (Fargate)")
    td, c = task_def(fg["task_definition_arn"])
    check(td["requiresCompatibilities"] == ["FARGATE"] and td["networkMode"] == "awsvpc", "FARGATE, awsvpc")
    check(set(c) == {"init", "cloudmap-sd", "prometheus"}, "containers init, cloudmap-sd, prometheus")
    check(sorted(v["name"] for v in td["volumes"]) == ["file-sd", "prometheus-config", "prometheus-data"],
          "three task volumes")
    check(td["taskRoleArn"].endswith(f":role/{fg['task_role_name']}"), "task role set")
    check(td["executionRoleArn"].endswith(f":role/{fg['execution_role_name']}"), "execution role set")
    init, side, prom = c["init"], c["cloudmap-sd"], c["prometheus"]
    check(init["essential"] is False and init["user"] == "0", "init: non-essential, root (chown)")
    check(side["user"] == "65534:65534" and prom["user"] == "65534:65534", "sidecar and prometheus share uid:gid 65534")
    check(all(x.get("readonlyRootFilesystem") for x in (init, side, prom)), "read-only root filesystems")
    check(side["healthCheck"]["command"] == ["CMD", "/cloudmap-sd", "healthcheck"], "sidecar health check (exec form)")
    check({"containerName": "init", "condition": "SUCCESS"} in side["dependsOn"], "sidecar waits for init SUCCESS")
    check({"containerName": "cloudmap-sd", "condition": "HEALTHY"} in prom["dependsOn"],
          "prometheus waits for cloudmap-sd HEALTHY")
    senv = env_of(side)
    check(senv.get("CLOUDMAP_SD_OUTPUT") == "/etc/prometheus/file_sd/cloudmap-sd.json", "CLOUDMAP_SD_OUTPUT on shared volume")
    check("CLOUDMAP_SD_SHARD" not in senv, "no shard: every target")
    check(senv.get("CLOUDMAP_SD_NAMESPACE") == out["namespace_name"], "CLOUDMAP_SD_NAMESPACE")
    check(senv.get("CLOUDMAP_SD_INTERVAL") == "30s" and senv.get("CLOUDMAP_SD_LISTEN") == "127.0.0.1:9469",
          "CLOUDMAP_SD_INTERVAL, CLOUDMAP_SD_LISTEN")
    mounts = {m["sourceVolume"]: m["readOnly"] for m in prom["mountPoints"]}
    check(mounts == {"prometheus-config": True, "file-sd": True, "prometheus-data": False},
          "prometheus: config and file-sd read-only, data writable")
    check(any(m["sourceVolume"] == "file-sd" and not m["readOnly"] for m in side["mountPoints"]),
          "sidecar: file-sd writable")

    cfg = yaml.safe_load(env_of(init)["PROMETHEUS_CONFIG"])
    labels = cfg["global"]["external_labels"]
    check(labels.get("cluster") == "moto-test", "external label cluster = ECS cluster name")
    check(labels.get("__replica__") == fg["replica_placeholder"], "external label __replica__ = per-task placeholder")
    check(labels.get("environment") == "moto", "extra external label")
    rw = cfg["remote_write"][0]
    check(rw["url"] == fg["remote_write_url"] and rw["url"].endswith(f"/workspaces/{fg['workspace_id']}/api/v1/remote_write"),
          "remote_write URL of the workspace")
    check(rw["sigv4"] == {"region": REGION}, "remote_write sigv4 region")
    files = cfg["scrape_configs"][0]["file_sd_configs"][0]["files"]
    check(files == ["/etc/prometheus/file_sd/*.json"], "file_sd glob covers the sidecar's file")

    print("ECS task definition (EC2, given workspace, all namespaces)")
    td2, c2 = task_def(ec2["task_definition_arn"])
    check(td2["requiresCompatibilities"] == ["EC2"] and td2["networkMode"] == "awsvpc", "EC2, awsvpc")
    check("CLOUDMAP_SD_NAMESPACE" not in env_of(c2["cloudmap-sd"]), "no CLOUDMAP_SD_NAMESPACE: every namespace")
    check(env_of(c2["cloudmap-sd"]).get("CLOUDMAP_SD_SHARD") == "1/3"
          and env_of(c2["cloudmap-sd"]).get("CLOUDMAP_SD_SHARD_KEY") == "task", "shard = 1/3 by task")
    cfg2 = yaml.safe_load(env_of(c2["init"])["PROMETHEUS_CONFIG"])
    check(cfg2["global"]["external_labels"]["cluster"] == "moto-ec2", "cluster_label override")
    check(ec2["workspace_arn"] == fg["workspace_arn"], "given workspace_id gives the same ARN")
    check(ec2["service_name"] is None, "create_service=false: no service")

    print("ECS service")
    svc = client("ecs").describe_services(cluster="moto-test", services=[fg["service_name"]])["services"][0]
    check(svc["desiredCount"] == 2 and svc["launchType"] == "FARGATE", "2 replicas on FARGATE")
    check(svc["taskDefinition"] == fg["task_definition_arn"], "runs the module's task definition")

    print("IAM: task role is least privilege")
    expected = {
        "servicediscovery:ListNamespaces", "servicediscovery:ListServices",
        "servicediscovery:GetService", "servicediscovery:ListTagsForResource",
        "servicediscovery:DiscoverInstances", "servicediscovery:DiscoverInstancesRevision",
        "ecs:DescribeTasks", "ecs:DescribeContainerInstances", "ec2:DescribeInstances", "aps:RemoteWrite",
    }
    sts = policy_statements(fg["task_role_name"], fg["task_role_name"])
    actions = set().union(*(s["actions"] for s in sts))
    check(actions == expected, "exactly the sidecar's and Prometheus's actions")
    aps = [s for s in sts if "aps:RemoteWrite" in s["actions"]]
    check(len(aps) == 1 and aps[0]["resources"] == [fg["workspace_arn"]] and aps[0]["actions"] == {"aps:RemoteWrite"},
          "aps:RemoteWrite only on the workspace ARN")
    disc = [s for s in sts if "servicediscovery:DiscoverInstances" in s["actions"]][0]
    names = disc["condition"]["StringEquals"]["servicediscovery:NamespaceName"]
    check(names in (out["namespace_name"], [out["namespace_name"]]), "DiscoverInstances limited to the namespace")
    star = {a for s in sts if "*" in s["resources"] for a in s["actions"]}
    check(star <= {"servicediscovery:ListNamespaces", "servicediscovery:ListServices",
                   "servicediscovery:DiscoverInstances", "servicediscovery:DiscoverInstancesRevision",
                   "ec2:DescribeInstances"},
          "Resource '*' only for actions without resource-level permissions")
    sts2 = policy_statements(ec2["task_role_name"], ec2["task_role_name"])
    disc2 = [s for s in sts2 if "servicediscovery:DiscoverInstances" in s["actions"]][0]
    check(not disc2["condition"], "no namespaces given: no NamespaceName condition")
    ex = policy_statements(fg["execution_role_name"], fg["execution_role_name"])
    check(set().union(*(s["actions"] for s in ex)) == {"logs:CreateLogStream", "logs:PutLogEvents"},
          "execution role: log writes only (no ECR repositories given)")
    check(all(r.endswith(":log-stream:*") for s in ex for r in s["resources"]), "execution role: the two log groups only")
    trust = client("iam").get_role(RoleName=fg["task_role_name"])["Role"]["AssumeRolePolicyDocument"]
    if isinstance(trust, str):
        trust = json.loads(trust)
    check("aws:SourceAccount" in json.dumps(trust), "task role trust limited to this account")

    print("AMP workspace and log groups")
    ws = client("amp").describe_workspace(workspaceId=fg["workspace_id"])["workspace"]
    check(ws["status"]["statusCode"] == "ACTIVE", "workspace ACTIVE")
    groups = {g["logGroupName"]: g for g in client("logs").describe_log_groups(logGroupNamePrefix="/ecs/prom-fargate/")["logGroups"]}
    check(set(groups) == set(fg["log_group_names"].values()), "two log groups")
    check(all(g.get("retentionInDays") == 30 for g in groups.values()), "log retention 30 days")


# Attributes that moto does not store or echo back; a second plan shows them as
# changes although the module did not change. Anything else is real drift.
MOTO_GAPS = {
    "aws_ecs_service": {"availability_zone_rebalancing", "enable_ecs_managed_tags"},
}


def cmd_drift(path):
    with open(path) as f:
        plan = json.load(f)
    print("Second plan after apply")
    bad = []
    for rc in plan.get("resource_changes", []):
        acts = rc["change"]["actions"]
        if acts in (["no-op"], ["read"]):
            continue
        before, after = rc["change"]["before"] or {}, rc["change"]["after"] or {}
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        allowed = MOTO_GAPS.get(rc["type"], set())
        if acts != ["update"] or not changed <= allowed:
            bad.append(f"{rc['address']} {acts} {sorted(changed - allowed)}")
        else:
            print(f"  note {rc['address']}: moto does not store {sorted(changed)}")
    check(not bad, "no drift besides known moto gaps" + ("" if not bad else ": " + "; ".join(bad)))


class _Metadata(http.server.BaseHTTPRequestHandler):
    task_arn = ""

    def do_GET(self):
        if self.path.endswith("/task"):
            body = json.dumps({"Cluster": "moto-test", "TaskARN": self.task_arn, "Family": "prom-fargate"},
                              indent=2).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args):
        pass


def run_init(container, root, metadata_url):
    """Runs the init container's command with sh, its volumes mapped under root."""
    env = env_of(container)
    for k in ("CONFIG_DIR", "FILE_SD_DIR", "DATA_DIR"):
        env[k] = os.path.join(root, k.lower())
        os.makedirs(env[k], exist_ok=True)
    env["RUN_AS"] = f"{os.getuid()}:{os.getgid()}"
    env["PATH"] = os.environ["PATH"]
    if metadata_url:
        env["ECS_CONTAINER_METADATA_URI_V4"] = metadata_url
    argv = container["entryPoint"] + container["command"]
    check(argv[:2] == ["/bin/sh", "-c"], "init runs its script with /bin/sh -c")
    proc = subprocess.run(["sh", "-c", argv[2]], env=env, capture_output=True, text=True, timeout=60)
    sys.stdout.write("".join(f"       | {line}\n" for line in (proc.stdout + proc.stderr).splitlines()))
    check(proc.returncode == 0, "init script exits 0")
    with open(os.path.join(env["CONFIG_DIR"], "prometheus.yml")) as f:
        return yaml.safe_load(f), env


def cmd_init_script(path):
    out = outputs(path)
    _, c = task_def(out["fargate"]["task_definition_arn"])
    task_id = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    _Metadata.task_arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/moto-test/{task_id}"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    root = tempfile.mkdtemp(prefix="cloudmap-sd-init.")
    try:
        print("init container script, with a task metadata endpoint")
        url = f"http://127.0.0.1:{server.server_address[1]}/v4/abc"
        cfg, env = run_init(c["init"], os.path.join(root, "a"), url)
        check(cfg["global"]["external_labels"]["__replica__"] == task_id, "__replica__ = task ID from TaskARN")
        check(cfg["global"]["external_labels"]["cluster"] == "moto-test", "cluster label kept")
        for k in ("FILE_SD_DIR", "DATA_DIR"):
            st = os.stat(env[k])
            check(f"{st.st_uid}:{st.st_gid}" == env["RUN_AS"] and (st.st_mode & 0o777) == 0o750,
                  f"{k} owned by RUN_AS, mode 0750")
        if shutil.which("promtool"):
            proc = subprocess.run(["promtool", "check", "config", os.path.join(env["CONFIG_DIR"], "prometheus.yml")],
                                  capture_output=True, text=True)
            check(proc.returncode == 0, "promtool check config: valid" + ("" if proc.returncode == 0 else ": " + proc.stdout + proc.stderr))
        else:
            print("  skip promtool not on PATH: rendered config not linted")

        print("init container script, without task metadata (hostname fallback)")
        cfg, _ = run_init(c["init"], os.path.join(root, "b"), None)
        hostname = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
        check(cfg["global"]["external_labels"]["__replica__"] == hostname, "__replica__ = hostname")
    finally:
        server.shutdown()
        shutil.rmtree(root, ignore_errors=True)


def cmd_discover(path, binary):
    out = outputs(path)
    sd = client("servicediscovery", inject_host_prefix=False)
    ip = "10.99.1.23"
    print("cloudmap-sd discovers the target the module tagged")
    sd.register_instance(
        ServiceId=out["web_service_id"],
        InstanceId="0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        Attributes={"AWS_INSTANCE_IPV4": ip, "AVAILABILITY_ZONE": "us-east-1a"},
    )
    sd.register_instance(
        ServiceId=out["quiet_service_id"],
        InstanceId="f9e8d7c6b5a4938271605f4e3d2c1b0a",
        Attributes={"AWS_INSTANCE_IPV4": "10.99.1.77"},
    )
    env = dict(os.environ)
    env.update({
        "AWS_ENDPOINT_URL": os.environ["MOTO_URL"],
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_EC2_METADATA_DISABLED": "true",
    })
    for k in list(env):
        if k.startswith("CLOUDMAP_SD_"):
            del env[k]
    argv = [binary, "once", "--output", "-", "--namespace", out["namespace_name"]]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        sys.stdout.write(proc.stderr[-4000:])
    check(proc.returncode == 0, f"{' '.join(argv[1:])} exits 0")
    groups = json.loads(proc.stdout)
    check(isinstance(groups, list), "output is a file_sd JSON list")
    web = [g for g in groups if f"{ip}:9102" in g.get("targets", [])]
    check(len(web) == 1, f"target {ip}:9102 (METRICS_PORT) present")
    check(web[0].get("labels", {}).get("__metrics_path__") == "/internal/metrics", "__metrics_path__ = METRICS_PATH")
    envoy = [g for g in groups if f"{ip}:9901" in g.get("targets", [])]
    check(len(envoy) == 1 and envoy[0]["labels"].get("__metrics_path__") == "/stats/prometheus",
          "named endpoint envoy: 9901 /stats/prometheus")
    check(not any("10.99.1.77" in t for g in groups for t in g.get("targets", [])),
          "the untagged (prometheus_enabled=false) service is not scraped")
    check(not any("cluster" in g.get("labels", {}) for g in groups),
          "no bare cluster target label (it would override the cluster external label AMP de-duplicates on)")
    print("       | " + json.dumps(web[0], sort_keys=True))


def main(argv):
    cmds = {
        "resources": (cmd_resources, 1),
        "drift": (cmd_drift, 1),
        "init-script": (cmd_init_script, 1),
        "discover": (cmd_discover, 2),
    }
    if len(argv) < 2 or argv[1] not in cmds or len(argv) - 2 != cmds[argv[1]][1]:
        sys.exit(__doc__)
    fn, _ = cmds[argv[1]]
    fn(*argv[2:])


if __name__ == "__main__":
    main(sys.argv)
