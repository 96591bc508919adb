"""Checks run by scripts/terraform-test.sh after `terraform apply` on moto server.

Each sub-command prints one line per check and exits non-zero on the first failure.

  resources OUTPUTS_JSON        what the modules created, read back from moto
  drift PLAN_JSON               a second plan changes nothing but known moto gaps
  init-script OUTPUTS_JSON      run the init container's script locally (fake task
                                metadata endpoint), promtool-check its prometheus.yml
  discover OUTPUTS_JSON BIN     register an instance in the tagged service, run
                                `cloudmap-sd once --output -`, find the target
  hosts OUTPUTS_JSON BIN        after `discover`: run cloudmap-sd with the sidecar
                                environment of prom-ec2 (EC2 hosts by cluster, against
                                moto container instances and a task) and of
                                prom-migration (hosts by tag, against tagged moto
                                instances); promtool reads each prometheus.yml and its
                                jobs' targets; `cloudmap-sd check` lints it
  service OUTPUTS_JSON BIN      after `hosts`: run `cloudmap-sd run` with the
                                environment of the discovery-service task definition
                                and the token of its secret; /sd/targets answers 401
                                without the token, the targets with it, the
                                collector's share, and /sd/hosts the hosts
  refusals PLAN_JSON_LOG        `terraform plan -json` of tests/moto/refusals gave
                                exactly the expected errors

Environment: MOTO_URL (http://127.0.0.1:PORT).
"""

import base64
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

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


ECS_TARGET = "AmazonEC2ContainerServiceV20141113."


def recorded_entries(text):
    """The entries of moto's recording, in order. moto 5.1.6's recorder appends an
    entry and its newline in two writes from whichever server thread handled the
    request, so an entry larger than the file buffer (a task definition, about 10 KB)
    can be followed by another request's entry before its own newline arrives
    ("A" "B" "\n" "\n"). The file is therefore read as a stream of JSON objects, not
    as one object a line; a truly mangled entry still fails loudly."""
    decoder, pos = json.JSONDecoder(), 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            return
        entry, pos = decoder.raw_decode(text, pos)
        yield entry


def sent_requests(target):
    """Bodies of the JSON-protocol requests whose X-Amz-Target is TARGET (e.g.
    ECS_TARGET + "CreateService"; Cloud Map has a CreateService too) that moto recorded
    while scripts/terraform-test.sh had its recorder on (the apply)."""
    with urllib.request.urlopen(os.environ["MOTO_URL"] + "/moto-api/recorder/download-recording", timeout=10) as r:
        text = r.read().decode()
    out = []
    for entry in recorded_entries(text):
        headers = {k.lower(): v for k, v in entry["headers"].items()}
        if headers.get("x-amz-target") != target:
            continue
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode()
        out.append(json.loads(body))
    return out


# The EC2 service's placement, as ecs.tf writes it: Availability Zones, then hosts.
EC2_PLACEMENT = [
    {"type": "spread", "field": "attribute:ecs.availability-zone"},
    {"type": "spread", "field": "instanceId"},
]

SIDECAR_ACTIONS = {
    "servicediscovery:ListNamespaces", "servicediscovery:ListServices",
    "servicediscovery:GetService", "servicediscovery:ListTagsForResource",
    "servicediscovery:DiscoverInstances", "servicediscovery:DiscoverInstancesRevision",
    "ecs:DescribeTasks", "ecs:DescribeServices", "aps:RemoteWrite",
}
EC2_HOST_ACTIONS = {"ecs:DescribeContainerInstances", "ec2:DescribeInstances"}
# ec2_hosts_ports without ec2_hosts_tag: the container instances of every cluster seen.
HOSTS_BY_CLUSTER_ACTION = "ecs:ListContainerInstances"

FILE_SD_DIR = "/etc/prometheus/file_sd"
HOSTS_JOB = "ec2-hosts"

# scrape_relabel_configs of tests/moto/main.tf, as prometheus.yml must hold them
# (fields left null in Terraform are not written).
EC2_RELABEL = [
    {"source_labels": ["ecs_service", "ecs_task_family"], "separator": "/", "target_label": "app",
     "regex": "(.+)/.*", "replacement": "$1"},
    {"action": "labeldrop", "regex": "ecs_task_revision"},
]
MIGRATION_RELABEL = [{"action": "labeldrop", "regex": "namespace|taskid"}]


def go_match(pattern, name):
    """Go's filepath.Match (what Prometheus's file_sd uses) for one path element,
    limited to literals, `*` and `?`: the module writes no other glob syntax."""
    if any(c in pattern for c in "[\\"):
        raise ValueError(f"go_match: {pattern!r} uses [ or \\, which this matcher does not implement")
    if not pattern:
        return not name
    if pattern[0] == "*":
        return any(go_match(pattern[1:], name[k:]) for k in range(len(name) + 1))
    if not name or pattern[0] not in ("?", name[0]):
        return False
    return go_match(pattern[1:], name[1:])


def temp_names(path):
    """Names the sidecar gives its temporary files beside PATH: `.<name>.<random>.tmp`
    (random: 6 characters from the tempfile crate), and the same with other lengths."""
    name = os.path.basename(path)
    return [f".{name}.{r}.tmp" for r in ("AbC123", "x", "0zZ9aQ7kLm")]


def check_file_sd(cfg, side_env, mounts, job_name, what):
    """The file_sd jobs of CFG read exactly the sidecar's files: job_name the targets
    file and, when the sidecar writes one, ec2-hosts the hosts file; every pattern on
    the shared volume; none matches another job's file or a temporary file."""
    own = {job_name: side_env["CLOUDMAP_SD_OUTPUT"]}
    if "CLOUDMAP_SD_EC2_HOSTS_OUTPUT" in side_env:
        own[HOSTS_JOB] = side_env["CLOUDMAP_SD_EC2_HOSTS_OUTPUT"]
    patterns = {j["job_name"]: [f for c in j["file_sd_configs"] for f in c["files"]]
                for j in cfg["scrape_configs"] if "file_sd_configs" in j}
    check(set(patterns) == set(own), f"{what}: file_sd jobs {sorted(own)}, one per sidecar file")
    check(all(os.path.dirname(p) == os.path.dirname(f) == mounts["file-sd"]
              for job, f in own.items() for p in patterns[job]),
          f"{what}: every file_sd pattern and sidecar file on the file-sd volume ({mounts['file-sd']})")
    for job, pats in patterns.items():
        base = [os.path.basename(p) for p in pats]
        check(any(go_match(b, os.path.basename(own[job])) for b in base),
              f"{what}: job {job} {pats} reads {own[job]}")
        others = [f for j, f in own.items() if j != job]
        check(not any(go_match(b, os.path.basename(f)) for b in base for f in others),
              f"{what}: job {job} {pats} does not read {others or 'another file'} (no target scraped twice)")
        temps = [t for f in own.values() for t in temp_names(f)]
        check(not any(go_match(b, t) for b in base for t in temps),
              f"{what}: job {job} {pats} matches no temporary file ({', '.join(temps[::3])})")


def promtool_check(cfg_text, placeholder, what, agent=False):
    """promtool check config (--agent: as agent mode reads it) on a rendered
    prometheus.yml (placeholder replaced as the init container does); returns its
    output."""
    promtool = shutil.which("promtool")
    if not promtool:
        check(False, "promtool on PATH to lint the rendered config (scripts/stack.sh install puts Prometheus's tools there)")
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        f.write(cfg_text.replace(placeholder, "task-0123"))
    try:
        argv = [promtool, "check", "config"] + (["--agent"] if agent else []) + [f.name]
        proc = subprocess.run(argv, capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    out = proc.stdout + proc.stderr
    check(proc.returncode == 0, f"{what}: promtool check config: valid" + ("" if proc.returncode == 0 else ": " + out))
    return out


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

    print("ECS: the scrape-target module's Service Connect way (tags on the ECS service)")
    api = out["api"]
    want = {"METRICS_PATH": "/metrics", "METRICS_PORT": "9100", "METRICS_CONTAINER": "exporter"}
    check(api["ecs_service_tags"] == want, "api (service_connect): ecs_service_tags output = the METRICS_* tags")
    check(api["service_id"] is None and api["service_registry"] is None,
          "api (service_connect): no Cloud Map service created (ECS owns it)")
    check(not any(s["Name"] == "api" for s in sd.list_services()["Services"]), "no Cloud Map service named api")
    described = client("ecs").describe_services(cluster="moto-test", services=[api["ecs_service_name"]],
                                                include=["TAGS"])["services"][0]
    etags = {t["key"]: t["value"] for t in described.get("tags", [])}
    check(etags == {**want, "team": "payments"}, "the ECS service carries them, beside its own tags")

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
    check(senv.get("CLOUDMAP_SD_EC2_ENRICHMENT") == "false",
          "enable_ec2_enrichment=false: CLOUDMAP_SD_EC2_ENRICHMENT=false")
    check(senv.get("CLOUDMAP_SD_ECS_SERVICE_TAGS") == "true",
          "enable_ecs_service_tags=true (default): CLOUDMAP_SD_ECS_SERVICE_TAGS=true")
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
    check(senv.get("CLOUDMAP_SD_AMP_REMOTE_WRITE_URL") == rw["url"],
          "sidecar CLOUDMAP_SD_AMP_REMOTE_WRITE_URL = Prometheus's remote_write URL (AMP probe on)")
    files = cfg["scrape_configs"][0]["file_sd_configs"][0]["files"]
    check(files == [f"{FILE_SD_DIR}/cloudmap-sd.json"], "file_sd of the cloudmap job: the sidecar's targets file")
    check([j["job_name"] for j in cfg["scrape_configs"]] == ["cloudmap", "prometheus", "cloudmap-sd"],
          "ec2_hosts_ports empty: jobs cloudmap, prometheus, cloudmap-sd (no ec2-hosts)")
    check("relabel_configs" not in cfg["scrape_configs"][0], "scrape_relabel_configs empty: no relabel_configs key")
    check(not any(k.startswith("CLOUDMAP_SD_EC2_HOSTS_") for k in senv) and fg["ec2_hosts_file_sd_path"] is None,
          "ec2_hosts_ports empty: no CLOUDMAP_SD_EC2_HOSTS_* variable, ec2_hosts_file_sd_path null")
    check_file_sd(cfg, senv, {m["sourceVolume"]: m["containerPath"] for m in prom["mountPoints"]}, "cloudmap", "Fargate")
    promtool_check(env_of(init)["PROMETHEUS_CONFIG"], fg["replica_placeholder"], "Fargate")

    print("ECS task definition (EC2, given workspace, all namespaces)")
    td2, c2 = task_def(ec2["task_definition_arn"])
    check(td2["requiresCompatibilities"] == ["EC2"] and td2["networkMode"] == "awsvpc", "EC2, awsvpc")
    senv2 = env_of(c2["cloudmap-sd"])
    check("CLOUDMAP_SD_NAMESPACE" not in senv2, "no CLOUDMAP_SD_NAMESPACE: every namespace")
    check(senv2.get("CLOUDMAP_SD_SHARD") == "1/3" and senv2.get("CLOUDMAP_SD_SHARD_KEY") == "task",
          "shard = 1/3 by task")
    check(senv2.get("CLOUDMAP_SD_EC2_ENRICHMENT") == "true",
          "enable_ec2_enrichment=true (default): CLOUDMAP_SD_EC2_ENRICHMENT=true")
    cfg2 = yaml.safe_load(env_of(c2["init"])["PROMETHEUS_CONFIG"])
    check(cfg2["global"]["external_labels"]["cluster"] == "moto-ec2", "cluster_label override")
    check(senv2.get("CLOUDMAP_SD_EC2_HOSTS_OUTPUT") == f"{FILE_SD_DIR}/ec2-hosts.json" == ec2["ec2_hosts_file_sd_path"],
          "ec2_hosts_ports: CLOUDMAP_SD_EC2_HOSTS_OUTPUT = the hosts file beside the targets file (output ec2_hosts_file_sd_path)")
    check(senv2.get("CLOUDMAP_SD_OUTPUT") == ec2["file_sd_path"], "CLOUDMAP_SD_OUTPUT = output file_sd_path")
    check(senv2.get("CLOUDMAP_SD_EC2_HOSTS_PORT") == "9100,8080", "CLOUDMAP_SD_EC2_HOSTS_PORT=9100,8080 (comma-separated)")
    check("CLOUDMAP_SD_EC2_HOSTS_TAG" not in senv2, "no ec2_hosts_tag: no CLOUDMAP_SD_EC2_HOSTS_TAG (hosts by cluster)")
    jobs2 = {j["job_name"]: j for j in cfg2["scrape_configs"]}
    check(list(jobs2) == ["cloudmap", HOSTS_JOB, "prometheus", "cloudmap-sd"],
          "jobs cloudmap, ec2-hosts, prometheus, cloudmap-sd")
    check(jobs2[HOSTS_JOB]["file_sd_configs"] == [{"files": [ec2["ec2_hosts_file_sd_path"]], "refresh_interval": "5m"}],
          "job ec2-hosts: file_sd of the hosts file only")
    check(set(jobs2[HOSTS_JOB]) == {"job_name", "file_sd_configs"}, "job ec2-hosts: no relabel_configs of its own")
    check(jobs2["cloudmap"].get("relabel_configs") == EC2_RELABEL,
          "scrape_relabel_configs rendered into the cloudmap job, in order, null fields left out")
    check_file_sd(cfg2, senv2, {m["sourceVolume"]: m["containerPath"] for m in c2["prometheus"]["mountPoints"]},
                  "cloudmap", "EC2")
    promtool_check(env_of(c2["init"])["PROMETHEUS_CONFIG"], fg["replica_placeholder"], "EC2")

    print("ECS task definition (migration: reloader labels, labeldrop, EC2 hosts by tag, no service)")
    mig = out["migration"]
    td3, c3 = task_def(mig["task_definition_arn"])
    check(td3["requiresCompatibilities"] == ["FARGATE"], "Prometheus on Fargate may scrape EC2 hosts")
    check(mig["service_name"] is None, "create_service=false: no service")
    senv3 = env_of(c3["cloudmap-sd"])
    check(senv3.get("CLOUDMAP_SD_EC2_HOSTS_OUTPUT") == mig["ec2_hosts_file_sd_path"] == f"{FILE_SD_DIR}/ec2-hosts.json",
          "CLOUDMAP_SD_EC2_HOSTS_OUTPUT = the hosts file")
    check(senv3.get("CLOUDMAP_SD_EC2_HOSTS_PORT") == "9100", "CLOUDMAP_SD_EC2_HOSTS_PORT=9100")
    check(senv3.get("CLOUDMAP_SD_EC2_HOSTS_TAG") == "ecs-hosts=moto", "CLOUDMAP_SD_EC2_HOSTS_TAG=ecs-hosts=moto")
    check(senv3.get("CLOUDMAP_SD_EC2_ENRICHMENT") == "true" and senv3.get("CLOUDMAP_SD_LABEL_STYLE") == "reloader",
          "EC2 host lookups on, reloader labels")
    check(senv3.get("CLOUDMAP_SD_ECS_SERVICE_TAGS") == "false",
          "enable_ecs_service_tags=false: CLOUDMAP_SD_ECS_SERVICE_TAGS=false")
    cfg3 = yaml.safe_load(env_of(c3["init"])["PROMETHEUS_CONFIG"])
    jobs3 = {j["job_name"]: j for j in cfg3["scrape_configs"]}
    check(list(jobs3) == ["ecs-services", HOSTS_JOB, "prometheus", "cloudmap-sd"],
          "jobs ecs-services (job_name), ec2-hosts, prometheus, cloudmap-sd")
    check(jobs3["ecs-services"].get("relabel_configs") == MIGRATION_RELABEL,
          "relabel_configs: labeldrop namespace|taskid (docs/migration.md, Series identity at the switch)")
    check_file_sd(cfg3, senv3, {m["sourceVolume"]: m["containerPath"] for m in c3["prometheus"]["mountPoints"]},
                  "ecs-services", "migration")
    promtool_check(env_of(c3["init"])["PROMETHEUS_CONFIG"], mig["replica_placeholder"], "migration")
    check(ec2["workspace_arn"] == fg["workspace_arn"], "given workspace_id gives the same ARN")
    check(senv2.get("CLOUDMAP_SD_AMP_REMOTE_WRITE_URL") == cfg2["remote_write"][0]["url"] == ec2["remote_write_url"]
          == fg["remote_write_url"], "sidecar CLOUDMAP_SD_AMP_REMOTE_WRITE_URL = the given workspace's remote_write URL")

    print("ECS services, read back")
    ecs = client("ecs")
    svc = ecs.describe_services(cluster="moto-test", services=[fg["service_name"]])["services"][0]
    check(svc["desiredCount"] == 2 and svc["launchType"] == "FARGATE", "Fargate: 2 replicas on FARGATE")
    check(svc["taskDefinition"] == fg["task_definition_arn"], "Fargate: runs the module's task definition")
    check(svc.get("platformVersion") == "LATEST", "Fargate: platformVersion LATEST")
    check(not svc.get("placementStrategy"), "Fargate: no placement strategy")
    check(ec2["service_name"] == "prom-ec2", "EC2: create_service=true gives service prom-ec2")
    svc2 = ecs.describe_services(cluster="moto-test", services=[ec2["service_name"]])["services"][0]
    check(svc2["desiredCount"] == 2 and svc2["launchType"] == "EC2", "EC2: 2 replicas, launchType EC2")
    check(svc2["taskDefinition"] == ec2["task_definition_arn"], "EC2: runs the module's task definition")
    check(not svc2.get("platformVersion"), "EC2: no platformVersion")
    check(svc2["networkConfiguration"]["awsvpcConfiguration"].get("assignPublicIp") in (None, "DISABLED"),
          "EC2: awsvpc without public IP")
    if "placementStrategy" in svc2:
        check(svc2["placementStrategy"] == EC2_PLACEMENT, "EC2: placementStrategy spread by AZ, then instanceId")
    else:
        print("  note moto does not return placementStrategy; checked in the CreateService request below")

    print("ECS services, as apply sent them (moto's request recording)")
    created = {r["serviceName"]: r for r in sent_requests(ECS_TARGET + "CreateService")}
    check(set(created) == {"prom-fargate", "prom-ec2", "prom-events", "prom-events-1", "api", "moto-sd",
                           "moto-collector-1"},
          "apply sent CreateService for prom-fargate, prom-ec2, a service per replica of prom-events, "
          "moto-sd, moto-collector-1 (and the application api)")
    fsent, esent = created["prom-fargate"], created["prom-ec2"]
    check(fsent.get("launchType") == "FARGATE" and fsent.get("platformVersion") == "LATEST"
          and "placementStrategy" not in fsent, "Fargate: launchType FARGATE, platformVersion LATEST, no placement")
    check(esent.get("launchType") == "EC2", "EC2: launchType EC2")
    check("platformVersion" not in esent, "EC2: platformVersion not sent (null)")
    check(esent.get("placementStrategy") == EC2_PLACEMENT,
          "EC2: placementStrategy spread attribute:ecs.availability-zone, then instanceId")
    check(not esent.get("capacityProviderStrategy"), "EC2: no capacity provider strategy (launch type instead)")

    print("IAM: task role is least privilege")
    sts = policy_statements(fg["task_role_name"], fg["task_role_name"])
    actions = set().union(*(s["actions"] for s in sts))
    check(actions == SIDECAR_ACTIONS,
          "Fargate (enable_ec2_enrichment=false): exactly the sidecar's and Prometheus's actions, no EC2 host lookups")
    ec2_actions = set().union(*(s["actions"] for s in policy_statements(ec2["task_role_name"], ec2["task_role_name"])))
    check(ec2_actions == SIDECAR_ACTIONS | EC2_HOST_ACTIONS | {HOSTS_BY_CLUSTER_ACTION},
          "EC2 (enable_ec2_enrichment=true, ec2_hosts_ports by cluster): plus ecs:DescribeContainerInstances, "
          "ec2:DescribeInstances, ecs:ListContainerInstances")
    lci = [s for s in policy_statements(ec2["task_role_name"], ec2["task_role_name"])
           if HOSTS_BY_CLUSTER_ACTION in s["actions"]]
    check(len(lci) == 1 and lci[0]["actions"] == {HOSTS_BY_CLUSTER_ACTION}
          and lci[0]["resources"] == [f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/*"] and not lci[0]["condition"],
          "ecs:ListContainerInstances on the clusters of this account and Region only (cluster ARNs, no '*')")
    sts3 = policy_statements(out["migration"]["task_role_name"], out["migration"]["task_role_name"])
    check(set().union(*(s["actions"] for s in sts3)) == (SIDECAR_ACTIONS | EC2_HOST_ACTIONS) - {"ecs:DescribeServices"},
          "migration (ec2_hosts_tag, enable_ecs_service_tags=false): no ecs:ListContainerInstances, "
          "no ecs:DescribeServices; hosts by ec2:DescribeInstances")
    dsv = [s for s in sts if "ecs:DescribeServices" in s["actions"]]
    check(len(dsv) == 1 and dsv[0]["actions"] == {"ecs:DescribeServices"}
          and dsv[0]["resources"] == [f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/*"] and not dsv[0]["condition"],
          "ecs:DescribeServices on the ECS services of this account and Region only")
    aps = [s for s in sts if "aps:RemoteWrite" in s["actions"]]
    check(len(aps) == 1 and aps[0]["resources"] == [fg["workspace_arn"]] and aps[0]["actions"] == {"aps:RemoteWrite"},
          "aps:RemoteWrite only on the workspace ARN")
    disc = [s for s in sts if "servicediscovery:DiscoverInstances" in s["actions"]][0]
    names = disc["condition"]["StringEquals"]["servicediscovery:NamespaceName"]
    check(names in (out["namespace_name"], [out["namespace_name"]]), "DiscoverInstances limited to the namespace")
    sts2 = policy_statements(ec2["task_role_name"], ec2["task_role_name"])
    star = {a for s in sts + sts2 + sts3 if "*" in s["resources"] for a in s["actions"]}
    check(star <= {"servicediscovery:ListNamespaces", "servicediscovery:ListServices",
                   "servicediscovery:DiscoverInstances", "servicediscovery:DiscoverInstancesRevision",
                   "ec2:DescribeInstances"},
          "Resource '*' only for actions without resource-level permissions (all three roles)")
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

    check_agent(out)
    check_discovery_service(out, created["moto-sd"])
    check_collector(out)
    check_accounts(out)
    check_events(out)

    print("AMP workspace and log groups")
    ws = client("amp").describe_workspace(workspaceId=fg["workspace_id"])["workspace"]
    check(ws["status"]["statusCode"] == "ACTIVE", "workspace ACTIVE")
    groups = {g["logGroupName"]: g for g in client("logs").describe_log_groups(logGroupNamePrefix="/ecs/prom-fargate/")["logGroups"]}
    check(set(groups) == set(fg["log_group_names"].values()), "two log groups")
    check(all(g.get("retentionInDays") == 30 for g in groups.values()), "log retention 30 days")


def check_events(out):
    """enable_events: the rule for the cluster's task events, a queue per replica
    that admits only that rule, encrypted and short-lived, each replica's own
    service and task definition told its queue, the task role allowed exactly those
    queues; and an event put on the bus reaches both replicas' queues."""
    ev = out["events"]
    print("ECS event stream (enable_events)")
    events, sqs = client("events"), client("sqs")
    rule_name = ev["rule_arn"].split("/")[-1]
    rule = events.describe_rule(Name=rule_name)
    pattern = json.loads(rule["EventPattern"])
    check(pattern == {"source": ["aws.ecs"], "detail-type": ["ECS Task State Change"],
                      "detail": {"clusterArn": [ev["cluster_arn"]]}},
          "the rule takes the cluster's ECS task state changes")
    queues = ev["queue_urls"]
    check(len(queues) == 2, "a queue per replica (desired_count 2)")
    arns = []
    for url in queues:
        a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        arns.append(a["QueueArn"])
        name = url.rsplit("/", 1)[-1]
        check(a.get("SqsManagedSseEnabled") == "true", f"{name}: encrypted (SSE-SQS)")
        check(a.get("MessageRetentionPeriod") == "3600", f"{name}: a message kept an hour at most")
        policy = json.loads(a["Policy"])
        stmts = policy["Statement"]
        check(len(stmts) == 1 and stmts[0]["Effect"] == "Allow"
              and stmts[0]["Action"] in ("sqs:SendMessage", ["sqs:SendMessage"])
              and stmts[0]["Principal"] == {"Service": "events.amazonaws.com"}
              and stmts[0]["Condition"] == {"ArnEquals": {"aws:SourceArn": ev["rule_arn"]}},
              f"{name}: only the rule may send (aws:SourceArn)")
    targets = events.list_targets_by_rule(Rule=rule_name)["Targets"]
    check(sorted(t["Arn"] for t in targets) == sorted(arns), "each queue is a target of the rule")
    check(len(ev["service_names"]) == 2, "an ECS service per replica")
    services = client("ecs").describe_services(cluster=ev["cluster_arn"], services=ev["service_names"])["services"]
    check(all(s["desiredCount"] == 1 for s in services), "each replica's service runs one task")
    for i, arn in enumerate(ev["task_definition_arns"]):
        _, c = task_def(arn)
        env = env_of(c["cloudmap-sd"])
        check(env.get("CLOUDMAP_SD_EVENTS_QUEUE_URL") == queues[i], f"replica {i} reads queue {i}")
        check(env.get("CLOUDMAP_SD_INTERVAL") == "15m", f"replica {i}: a 15m interval, the safety net")
    stmts = policy_statements(ev["task_role_name"], ev["task_role_name"])
    read = [s for s in stmts if s["sid"] == "ReadEventQueues"]
    check(len(read) == 1, "the task role reads the event queues")
    check(read[0]["actions"] == {"sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"},
          "sqs:ReceiveMessage, DeleteMessage, GetQueueAttributes")
    check(sorted(read[0]["resources"]) == sorted(arns), "on those queues only")
    check(not any(a.startswith("sqs:") for s in stmts if s["sid"] != "ReadEventQueues" for a in s["actions"]),
          "no other SQS statement")
    detail = {"clusterArn": ev["cluster_arn"], "taskArn": ev["cluster_arn"].replace(":cluster/", ":task/") + "/0123",
              "lastStatus": "RUNNING", "desiredStatus": "RUNNING", "group": "service:web", "version": 2}
    events.put_events(Entries=[{"Source": "aws.ecs", "DetailType": "ECS Task State Change",
                                "Detail": json.dumps(detail)}])
    for url in queues:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        check(len(got) == 1 and json.loads(got[0]["Body"])["detail"]["version"] == 2,
              f"{url.rsplit('/', 1)[-1]}: the event reached this replica's queue")
        sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])


def check_agent(out):
    print("ECS task definition (prometheus_mode = agent)")
    fg_td, fg = task_def(out["fargate"]["task_definition_arn"])
    check(env_of(fg["cloudmap-sd"]).get("CLOUDMAP_SD_PROMETHEUS_MODE") == "server"
          and any(a.startswith("--storage.tsdb.path=") for a in fg["prometheus"]["command"]),
          "server (default): CLOUDMAP_SD_PROMETHEUS_MODE=server, --storage.tsdb.path")
    _, c = task_def(out["agent"]["task_definition_arn"])
    cmd = c["prometheus"]["command"]
    check("--agent" in cmd and "--storage.agent.path=/prometheus" in cmd,
          "agent on a 3.x image: --agent, --storage.agent.path=/prometheus")
    check(not any(a.startswith("--storage.tsdb.") for a in cmd), "agent: no --storage.tsdb.* flag (agent mode refuses them)")
    check(env_of(c["cloudmap-sd"]).get("CLOUDMAP_SD_PROMETHEUS_MODE") == "agent",
          "agent: the sidecar's CLOUDMAP_SD_PROMETHEUS_MODE=agent (watch and check expect an agent)")
    promtool_check(env_of(c["init"])["PROMETHEUS_CONFIG"], out["agent"]["replica_placeholder"], "agent", agent=True)


SD_TOKEN_DIR = "/run/cloudmap-sd"
# The task role of the discovery service: the sidecar's calls without aps:RemoteWrite
# (it only discovers), with the EC2 host lookups and the hosts list by cluster.
SD_ACTIONS = (SIDECAR_ACTIONS - {"aps:RemoteWrite"}) | EC2_HOST_ACTIONS | {HOSTS_BY_CLUSTER_ACTION}


def check_discovery_service(out, sent):
    ds = out["discovery_service"]
    print("Discovery service (modules/discovery-service): task definition")
    td, c = task_def(ds["task_definition_arn"])
    check(set(c) == {"init", "cloudmap-sd"}, "containers init, cloudmap-sd")
    check([v["name"] for v in td["volumes"]] == ["token"], "one task volume, token")
    init, side = c["init"], c["cloudmap-sd"]
    check(init["essential"] is False and init["user"] == "0", "init: non-essential, root (chown of the token)")
    check(init.get("secrets") == [{"name": "HTTP_SD_TOKEN", "valueFrom": ds["token_secret_arn"]}],
          "init: the token comes from the secret (ECS secrets), not from the task definition")
    check(init["mountPoints"] == [{"sourceVolume": "token", "containerPath": SD_TOKEN_DIR, "readOnly": False}],
          "init: writes the token volume")
    check(side["mountPoints"] == [{"sourceVolume": "token", "containerPath": SD_TOKEN_DIR, "readOnly": True}],
          "sidecar: reads the token volume only")
    check({"containerName": "init", "condition": "SUCCESS"} in side["dependsOn"], "sidecar waits for init SUCCESS")
    check(side["user"] == "65534:65534" and all(x.get("readonlyRootFilesystem") for x in (init, side)),
          "sidecar as 65534, read-only root filesystems")
    check([p["containerPort"] for p in side["portMappings"]] == [9469], "port 9469")
    check(side["healthCheck"]["command"] == ["CMD", "/cloudmap-sd", "healthcheck"], "sidecar health check (exec form)")
    senv = env_of(side)
    want = {
        "CLOUDMAP_SD_OUTPUT": "none", "CLOUDMAP_SD_LISTEN": "0.0.0.0:9469",
        "CLOUDMAP_SD_HTTP_SD_BEARER_TOKEN_FILE": f"{SD_TOKEN_DIR}/token",
        "CLOUDMAP_SD_EC2_HOSTS_OUTPUT": "none", "CLOUDMAP_SD_EC2_HOSTS_PORT": "9100",
        "CLOUDMAP_SD_REMOTE_WRITE_WATCH_INTERVAL": "0s", "CLOUDMAP_SD_AMP_PROBE_INTERVAL": "0s",
        "CLOUDMAP_SD_NAMESPACE": out["namespace_name"], "CLOUDMAP_SD_ECS_SERVICE_TAGS": "true",
    }
    bad = {k: senv.get(k) for k, v in want.items() if senv.get(k) != v}
    check(not bad, "sidecar environment: no file, listen on every address, the token file, /sd/hosts, "
          "ECS service tags, no watch, no probe"
          + ("" if not bad else f": {bad}"))
    check(not any(re.search(r"token", e["name"], re.I) and e["name"] != "CLOUDMAP_SD_HTTP_SD_BEARER_TOKEN_FILE"
                  for e in side.get("environment", [])) and "secrets" not in side,
          "no token value in the sidecar's definition")

    print("Discovery service: Cloud Map registration and ECS service")
    sd = client("servicediscovery")
    svc = sd.get_service(Id=ds["cloud_map_service_id"])["Service"]
    check(svc["Name"] == "cloudmap-sd" and svc.get("NamespaceId") == ds["sd_namespace_id"],
          "Cloud Map service cloudmap-sd in the private DNS namespace")
    check([r["Type"] for r in svc["DnsConfig"]["DnsRecords"]] == ["A"], "A records (awsvpc task IPs)")
    tags = {t["Key"]: t["Value"] for t in sd.list_tags_for_resource(ResourceARN=svc["Arn"])["Tags"]}
    check(tags.get("METRICS_PATH") == "/metrics" and tags.get("METRICS_PORT") == "9469",
          "scrape_itself: tagged METRICS_PATH=/metrics, METRICS_PORT=9469")
    check(ds["dns_name"] == "cloudmap-sd.sd.moto.test"
          and ds["targets_url"] == "http://cloudmap-sd.sd.moto.test:9469/sd/targets"
          and ds["hosts_url"] == "http://cloudmap-sd.sd.moto.test:9469/sd/hosts",
          "outputs dns_name, targets_url, hosts_url")
    check([r.get("registryArn") for r in sent.get("serviceRegistries", [])] == [svc["Arn"]],
          "CreateService registers the tasks in that Cloud Map service")
    ecs_svc = client("ecs").describe_services(cluster="moto-test", services=[ds["service_name"]])["services"][0]
    check(ecs_svc["desiredCount"] == 2 and ecs_svc["taskDefinition"] == ds["task_definition_arn"],
          "ECS service: an HA pair running the module's task definition")

    print("Discovery service: the token and IAM")
    value = client("secretsmanager").get_secret_value(SecretId=ds["token_secret_arn"])["SecretString"]
    check(re.fullmatch(r"[A-Za-z0-9]{48}", value) is not None, "created secret: a 48-character token")
    ex = policy_statements(ds["execution_role_name"], ds["execution_role_name"])
    read = [s for s in ex if "secretsmanager:GetSecretValue" in s["actions"]]
    check(len(read) == 1 and read[0]["resources"] == [ds["token_secret_arn"]],
          "execution role: secretsmanager:GetSecretValue on that secret only")
    check(set().union(*(s["actions"] for s in ex)) == {"logs:CreateLogStream", "logs:PutLogEvents",
                                                       "secretsmanager:GetSecretValue"},
          "execution role: logs and the token only")
    ts = policy_statements(ds["task_role_name"], ds["task_role_name"])
    check(set().union(*(s["actions"] for s in ts)) == SD_ACTIONS,
          "task role: Cloud Map, ECS and EC2 reads (ecs:DescribeServices too), no aps:RemoteWrite")
    # modules/discovery-policy is the one place of the discovery statements: given the
    # same namespaces and switches, the discovery role's policy is the same document.
    same = policy_statements(out["discovery_role"]["role_name"], out["discovery_role"]["role_name"])
    key = lambda sts: sorted((s["sid"], sorted(s["actions"]), sorted(s["resources"]), json.dumps(s["condition"], sort_keys=True))
                             for s in sts)
    check(key(ts) == key(same), "task role: the statements of modules/discovery-policy (as the discovery role's)")


def collector_config(container):
    return yaml.safe_load(env_of(container)["AOT_CONFIG_CONTENT"])


def check_collector(out):
    col, ds = out["collector"], out["discovery_service"]
    print("ADOT collector (modules/adot-collector): configuration")
    _, c = task_def(col["task_definition_arn"])
    check(set(c) == {"aws-otel-collector"}, "one container, aws-otel-collector")
    ctr = c["aws-otel-collector"]
    check(ctr.get("secrets") == [{"name": "CLOUDMAP_SD_TOKEN", "valueFrom": ds["token_secret_arn"]}],
          "the token comes from the discovery service's secret")
    cfg = collector_config(ctr)
    prom = cfg["receivers"]["prometheus"]["config"]
    sdc = prom["scrape_configs"][0]["http_sd_configs"][0]
    check(sdc["url"] == col["sd_url"] == ds["targets_url"] + "?shard=1/2&shard_key=task",
          "http_sd_configs url: the discovery service's /sd/targets, shard 1/2 by task")
    check(sdc.get("authorization") == {"type": "Bearer", "credentials": "${env:CLOUDMAP_SD_TOKEN}"},
          "authorization Bearer from ${env:CLOUDMAP_SD_TOKEN}")
    prw = cfg["exporters"]["prometheusremotewrite"]
    check(prw["endpoint"] == col["remote_write_url"] == out["fargate"]["remote_write_url"]
          and prw["auth"] == {"authenticator": "sigv4auth"}
          and cfg["extensions"]["sigv4auth"] == {"region": REGION, "service": "aps"},
          "remote write to the workspace, signed by sigv4auth for aps")
    check(cfg["service"]["pipelines"]["metrics"] == {"receivers": ["prometheus"], "exporters": ["prometheusremotewrite"]},
          "metrics pipeline prometheus -> prometheusremotewrite")
    promtool_check(yaml.safe_dump(prom).replace("${env:CLOUDMAP_SD_TOKEN}", "token"), "no placeholder here",
                   "collector's Prometheus receiver")
    for role in (col["task_role_name"], ds["task_role_name"]):
        trust = client("iam").get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
        trust = json.loads(trust) if isinstance(trust, str) else trust
        check("aws:SourceAccount" in json.dumps(trust) and "aws:SourceArn" in json.dumps(trust),
              f"{role}: trusted by ECS tasks of this account and Region only (modules/ecs-task-trust)")
    ts = policy_statements(col["task_role_name"], col["task_role_name"])
    check(len(ts) == 1 and ts[0]["actions"] == {"aps:RemoteWrite"} and ts[0]["resources"] == [out["fargate"]["workspace_arn"]],
          "collector task role: aps:RemoteWrite on the workspace only")
    ex = policy_statements(col["execution_role_name"], col["execution_role_name"])
    read = [s for s in ex if "secretsmanager:GetSecretValue" in s["actions"]]
    check(len(read) == 1 and read[0]["resources"] == [ds["token_secret_arn"]],
          "collector execution role: the token secret only")


def check_accounts(out):
    """discovery_role_arns: the sidecar's environment and sts:AssumeRole on exactly
    those roles; modules/discovery-role: its trust and its least-privilege policy."""
    acc, role = out["accounts"], out["discovery_role"]
    print("Other accounts: discovery_role_arns")
    _, c = task_def(acc["task_definition_arn"])
    senv = env_of(c["cloudmap-sd"])
    check(senv.get("CLOUDMAP_SD_ROLE_ARN") == ",".join(acc["discovery_role_arns"]),
          "CLOUDMAP_SD_ROLE_ARN: the roles, comma-separated")
    check(senv.get("CLOUDMAP_SD_ROLE_EXTERNAL_ID") == "central-prometheus", "CLOUDMAP_SD_ROLE_EXTERNAL_ID")
    sts = policy_statements(acc["task_role_name"], acc["task_role_name"])
    assume = [s for s in sts if "sts:AssumeRole" in s["actions"]]
    check(len(assume) == 1 and assume[0]["actions"] == {"sts:AssumeRole"}
          and sorted(assume[0]["resources"]) == sorted(acc["discovery_role_arns"]) and not assume[0]["condition"],
          "task role: sts:AssumeRole on exactly the discovery roles")
    check(set().union(*(s["actions"] for s in sts)) == SIDECAR_ACTIONS | EC2_HOST_ACTIONS | {"sts:AssumeRole"},
          "task role: the own account's discovery, AMP, and the AssumeRole")

    print("Other accounts: modules/discovery-role")
    iam = client("iam")
    r = iam.get_role(RoleName=role["role_name"])["Role"]
    check(r["Arn"] == role["role_arn"] and role["account_id"] == ACCOUNT, "role ARN and account outputs")
    check(r.get("MaxSessionDuration", 3600) == 3600, "sessions of an hour (the sidecar renews them)")
    trust = r["AssumeRolePolicyDocument"]
    if isinstance(trust, str):
        trust = json.loads(trust)
    (st,) = trust["Statement"]
    principal = st["Principal"]["AWS"]
    check(principal in (acc["task_role_arn"], [acc["task_role_arn"]]) and st["Action"] in ("sts:AssumeRole", ["sts:AssumeRole"]),
          "trusted by the Prometheus task role only")
    ext = st["Condition"]["StringEquals"]["sts:ExternalId"]
    check(ext in ("central-prometheus", ["central-prometheus"]), "and only with the external id")
    pol = policy_statements(role["role_name"], role["role_name"])
    discovery = SIDECAR_ACTIONS - {"aps:RemoteWrite"}
    check(set().union(*(s["actions"] for s in pol)) == discovery | EC2_HOST_ACTIONS | {HOSTS_BY_CLUSTER_ACTION},
          "policy: exactly the sidecar's discovery calls (EC2 hosts by cluster on), no AMP, no AssumeRole")
    star = {a for s in pol if "*" in s["resources"] for a in s["actions"]}
    check(star <= {"servicediscovery:ListNamespaces", "servicediscovery:ListServices",
                   "servicediscovery:DiscoverInstances", "servicediscovery:DiscoverInstancesRevision",
                   "ec2:DescribeInstances"},
          "Resource '*' only for actions without resource-level permissions")
    disc = [s for s in pol if "servicediscovery:DiscoverInstances" in s["actions"]][0]
    names = disc["condition"]["StringEquals"]["servicediscovery:NamespaceName"]
    check(names in (out["namespace_name"], [out["namespace_name"]]), "DiscoverInstances limited to the namespaces")
    scoped = [r for s in pol if "*" not in s["resources"] for r in s["resources"]]
    check(all(f":{REGION}:{ACCOUNT}:" in r for r in scoped), "every other resource in this account and Region")


# Attributes that moto does not store or echo back; a second plan shows them as
# changes although the module did not change. Anything else is real drift.
MOTO_GAPS = {
    "aws_ecs_service": {"availability_zone_rebalancing", "enable_ecs_managed_tags"},
}
# moto 5.1.6 drops the placementStrategy of CreateService (the recording shows it was
# sent), so the plan wants to add it again: allowed only from nothing to exactly the
# module's strategy, on the EC2 service.
PLACEMENT_GAP = ("module.prometheus_ec2.aws_ecs_service.this[0]", "ordered_placement_strategy")


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
        allowed = set(MOTO_GAPS.get(rc["type"], set()))
        if (rc["address"], "ordered_placement_strategy") == PLACEMENT_GAP \
                and not before.get("ordered_placement_strategy") \
                and after.get("ordered_placement_strategy") == EC2_PLACEMENT:
            allowed.add("ordered_placement_strategy")
        if acts != ["update"] or not changed <= allowed:
            bad.append(f"{rc['address']} {acts} {sorted(changed - allowed)}")
        else:
            print(f"  note {rc['address']}: moto does not store {sorted(changed)}")
    check(not bad, "no drift besides known moto gaps" + ("" if not bad else ": " + "; ".join(bad)))


def task_metadata(task_arn):
    """A task metadata v4 `/task` document shaped like the ECS agent's: the cluster
    first (so a parser that takes the first ARN-like value gets the wrong one), the
    task ARN, and containers whose labels repeat the task ARN under another key."""
    region, account, cluster = task_arn.split(":")[3], task_arn.split(":")[4], task_arn.split("/")[1]
    task_id = task_arn.rsplit("/", 1)[1]

    def container(name, image, docker_id):
        return {
            "DockerId": docker_id,
            "Name": name,
            "DockerName": name,
            "Image": image,
            "ImageID": "sha256:" + "ab" * 32,
            "Labels": {
                "com.amazonaws.ecs.cluster": f"arn:aws:ecs:{region}:{account}:cluster/{cluster}",
                "com.amazonaws.ecs.container-name": name,
                "com.amazonaws.ecs.task-arn": task_arn,
                "com.amazonaws.ecs.task-definition-family": "prom-fargate",
                "com.amazonaws.ecs.task-definition-version": "3",
            },
            "DesiredStatus": "RUNNING",
            "KnownStatus": "RUNNING",
            "Limits": {"CPU": 0},
            "Type": "NORMAL",
            "ContainerARN": f"arn:aws:ecs:{region}:{account}:container/{cluster}/{task_id}/{docker_id[:8]}",
            "LogDriver": "awslogs",
            "Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": ["10.99.1.40"]}],
        }

    return {
        "Cluster": f"arn:aws:ecs:{region}:{account}:cluster/{cluster}",
        "TaskARN": task_arn,
        "Family": "prom-fargate",
        "Revision": "3",
        "DesiredStatus": "RUNNING",
        "KnownStatus": "RUNNING",
        "Limits": {"CPU": 0.5, "Memory": 1024},
        "PullStartedAt": "2026-01-01T00:00:00.000000001Z",
        "AvailabilityZone": f"{region}a",
        "LaunchType": "FARGATE",
        "Containers": [
            container("init", "quay.io/prometheus/prometheus:v3.5.0", task_id + "-1111111111"),
            container("cloudmap-sd", "registry.example.test/cloudmap-sd:test", task_id + "-2222222222"),
        ],
        "ClockDrift": {"ClockErrorBound": 0.5, "ClockSynchronizationStatus": "SYNCHRONIZED"},
        "EphemeralStorageMetrics": {"Utilized": 261, "Reserved": 20496},
    }


class _Metadata(http.server.BaseHTTPRequestHandler):
    """Serves task_metadata() at <base>/task: under /compact/ as the agent sends it,
    one line of JSON with no spaces and no final newline; under /indented/ pretty
    printed over many lines."""

    task_arn = ""

    def do_GET(self):
        shape, _, rest = self.path.lstrip("/").partition("/")
        if rest.endswith("task") and rest.count("/") == 1 and shape in ("compact", "indented"):
            doc = task_metadata(self.task_arn)
            if shape == "compact":
                body = json.dumps(doc, separators=(",", ":")).encode()
            else:
                body = (json.dumps(doc, indent=4) + "\n").encode()
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


# The commands init.sh runs; with busybox, each is that applet, as in the Prometheus
# image (sh, sed and wget are busybox there).
BUSYBOX_APPLETS = ("sh", "sed", "wget", "grep", "timeout", "head", "hostname", "chown", "chmod", "mv", "cat", "printf", "echo")


def busybox_bin(root):
    """A directory holding only busybox applets, for PATH; None without busybox."""
    busybox = shutil.which("busybox")
    if not busybox:
        return None
    d = os.path.join(root, "busybox-bin")
    os.makedirs(d, exist_ok=True)
    for applet in BUSYBOX_APPLETS:
        os.symlink(busybox, os.path.join(d, applet))
    return d


def run_init(container, root, metadata_url, path=None):
    """Runs the init container's command with sh, its volumes mapped under root.
    path: PATH for the script (default: this process's)."""
    env = env_of(container)
    for k in ("CONFIG_DIR", "FILE_SD_DIR", "DATA_DIR"):
        env[k] = os.path.join(root, k.lower())
        os.makedirs(env[k], exist_ok=True)
    env["RUN_AS"] = f"{os.getuid()}:{os.getgid()}"
    env["PATH"] = path or os.environ["PATH"]
    if metadata_url:
        env["ECS_CONTAINER_METADATA_URI_V4"] = metadata_url
    argv = container["entryPoint"] + container["command"]
    check(argv[:2] == ["/bin/sh", "-c"], "init runs its script with /bin/sh -c")
    sh = os.path.join(path, "sh") if path else "sh"
    proc = subprocess.run([sh, "-c", argv[2]], env=env, capture_output=True, text=True, timeout=60)
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
        base = f"http://127.0.0.1:{server.server_address[1]}"
        with urllib.request.urlopen(f"{base}/compact/v4-abc/task", timeout=5) as r:
            compact = r.read()
        check(b"\n" not in compact and b'"TaskARN":"' in compact and json.loads(compact)["TaskARN"] == _Metadata.task_arn,
              "fake endpoint: compact form is one line of JSON without spaces or final newline")

        print("init container script, task metadata as indented multi-line JSON")
        cfg, _ = run_init(c["init"], os.path.join(root, "indented"), f"{base}/indented/v4-abc")
        check(cfg["global"]["external_labels"]["__replica__"] == task_id, "__replica__ = task ID from TaskARN")

        print("init container script, task metadata as compact one-line JSON (the agent's shape)")
        cfg, env = run_init(c["init"], os.path.join(root, "a"), f"{base}/compact/v4-abc")
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
            check(False, "promtool on PATH to lint the rendered config (scripts/stack.sh install puts Prometheus's tools there)")

        bb = busybox_bin(root)
        if bb:
            print("init container script under busybox (sh, sed, wget as in the Prometheus image), compact JSON")
            cfg, _ = run_init(c["init"], os.path.join(root, "busybox"), f"{base}/compact/v4-abc", path=bb)
            check(cfg["global"]["external_labels"]["__replica__"] == task_id, "busybox: __replica__ = task ID from TaskARN")
        else:
            check(False, "busybox on PATH to run the script with the Prometheus image's tools (apt-get install busybox)")

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
    service_connect(out, sd, env, binary)


def service_connect(out, sd, env, binary):
    """The Cloud Map service ECS Service Connect would create for the api ECS
    service (only its own AmazonECSManaged tag), with a task registered as ECS
    registers it: cloudmap-sd scrapes it by the tags the module put on the ECS
    service."""
    print("cloudmap-sd scrapes a Service Connect service by its ECS service's tags")
    ns_id = next(n["Id"] for n in sd.list_namespaces()["Namespaces"] if n["Name"] == out["namespace_name"])
    created = sd.create_service(Name="api", NamespaceId=ns_id, Tags=[{"Key": "AmazonECSManaged", "Value": "true"}])
    service_id, task = created["Service"]["Id"], "5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c"
    ip = "10.99.1.31"
    sd.register_instance(
        ServiceId=service_id,
        InstanceId=task,
        Attributes={"AWS_INSTANCE_IPV4": ip, "AWS_INSTANCE_PORT": "8080", "ECS_CLUSTER_NAME": "moto-test",
                    "ECS_SERVICE_NAME": out["api"]["ecs_service_name"], "ECS_TASK_DEFINITION_FAMILY": "api"},
    )
    argv = [binary, "once", "--output", "-", "--namespace", out["namespace_name"]]
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    finally:
        # Not Terraform's: gone before the destroy step deletes the namespace.
        sd.deregister_instance(ServiceId=service_id, InstanceId=task)
        sd.delete_service(Id=service_id)
    if proc.returncode != 0:
        sys.stdout.write(proc.stderr[-4000:])
    check(proc.returncode == 0, f"{' '.join(argv[1:])} exits 0")
    api = [g for g in json.loads(proc.stdout) if f"{ip}:9100" in g.get("targets", [])]
    check(len(api) == 1, f"target {ip}:9100 (METRICS_PORT of the ECS service)")
    labels = api[0]["labels"]
    check(labels.get("__metrics_path__") == "/metrics" and labels.get("cloudmap_service") == "api"
          and labels.get("ecs_service") == "api", "its path, Cloud Map service and ECS service")
    check(labels.get("__meta_ecs_service_tag_team") == "payments"
          and labels.get("__meta_cloudmap_service_tag_AmazonECSManaged") == "true",
          "the ECS service's and the Cloud Map service's tags as __meta_* labels")


def sidecar_env(container_env, file_sd_dir):
    """The environment of a sidecar run here: moto as the endpoint, and the task
    definition's CLOUDMAP_SD_* variables with the file-sd volume moved to
    file_sd_dir (and nothing from this process's own CLOUDMAP_SD_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMAP_SD_")}
    env.update({
        "AWS_ENDPOINT_URL": os.environ["MOTO_URL"],
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_EC2_METADATA_DISABLED": "true",
    })
    env.update({k: v.replace(FILE_SD_DIR, file_sd_dir) for k, v in container_env.items()
                if k.startswith("CLOUDMAP_SD_")})
    return env


def run_instance(ec2, image, tags):
    spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    inst = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                             TagSpecifications=spec)["Instances"][0]
    return inst["InstanceId"], inst["PrivateIpAddress"]


# URL of an _EcsTypesFix server in front of moto, while cmd_hosts runs.
ECS_FIX_URL = None


def run_sidecar_once(binary, container, sd_dir, drop=(), extra=None):
    """`cloudmap-sd once` with CONTAINER's environment, the file-sd volume moved to
    sd_dir, minus the variables in DROP, plus EXTRA. Returns (env, targets groups,
    hosts groups)."""
    env = sidecar_env({k: v for k, v in env_of(container).items() if k not in drop}, sd_dir)
    env.update(extra or {})
    if ECS_FIX_URL:
        env["AWS_ENDPOINT_URL_ECS"] = ECS_FIX_URL
    proc = subprocess.run([binary, "once"], env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        sys.stdout.write(proc.stderr[-4000:])
    check(proc.returncode == 0, "once exits 0 (the environment the module writes is accepted)")
    files = (env["CLOUDMAP_SD_OUTPUT"], env["CLOUDMAP_SD_EC2_HOSTS_OUTPUT"])
    # The sidecar writes its temporary files in a hidden staging directory it makes
    # beside the files.
    staging = os.path.join(sd_dir, ".cloudmap-sd-staging")
    names = sorted(os.listdir(sd_dir))
    left = sorted(os.listdir(staging)) if os.path.isdir(staging) else None
    check(names == sorted([os.path.basename(f) for f in files] + [".cloudmap-sd-staging"])
          and left == [],
          f"the file-sd directory holds the two files and the staging directory, no temporary "
          f"file anywhere: {names}, in the staging directory: {left}")
    loaded = []
    for path in files:
        with open(path) as f:
            loaded.append(json.load(f))
    return env, loaded[0], loaded[1]


def prometheus_reads(init_container, placeholder, sd_dir, root, jobs):
    """Writes the module's prometheus.yml with the file-sd volume at sd_dir, checks it
    with promtool, and returns {job: promtool check service-discovery's targets}."""
    cfg_path = os.path.join(root, "prometheus.yml")
    cfg_text = env_of(init_container)["PROMETHEUS_CONFIG"].replace(FILE_SD_DIR, sd_dir)
    with open(cfg_path, "w") as f:
        f.write(cfg_text.replace(placeholder, "task-0123"))
    proc = subprocess.run(["promtool", "check", "config", cfg_path], capture_output=True, text=True)
    check(proc.returncode == 0 and "does not exist" not in proc.stdout + proc.stderr,
          "promtool check config: valid, and both file_sd files found and parsed"
          + ("" if proc.returncode == 0 else ": " + proc.stdout + proc.stderr))
    seen = {}
    for job in jobs:
        proc = subprocess.run(["promtool", "check", "service-discovery", "--timeout=5s", cfg_path, job],
                              capture_output=True, text=True, timeout=60)
        check(proc.returncode == 0, f"promtool check service-discovery {job}"
              + ("" if proc.returncode == 0 else ": " + proc.stdout + proc.stderr))
        seen[job] = json.loads(proc.stdout)
    return cfg_path, seen


def addresses(groups):
    return {t for g in groups for t in g.get("targets", [])}


def file_labels(groups, address):
    """The labels a file_sd file gives ADDRESS ({} when it is not there)."""
    return next((dict(g.get("labels", {})) for g in groups if address in g.get("targets", [])), {})


class _EcsTypesFix(http.server.BaseHTTPRequestHandler):
    """Forwards ECS requests to moto and fixes one gap of moto 5.1.6 on the way back:
    its DescribeTasks gives containers[].cpu and .memory as numbers where the ECS API
    (and so the AWS SDK the sidecar uses) has strings, and the SDK refuses the whole
    answer. Only those two fields of that one call are changed."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
        req = urllib.request.Request(os.environ["MOTO_URL"] + self.path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, data, ctype = r.status, r.read(), r.headers.get("Content-Type", "application/x-amz-json-1.1")
        except urllib.error.HTTPError as e:
            status, data, ctype = e.code, e.read(), e.headers.get("Content-Type", "application/x-amz-json-1.1")
        if status == 200 and self.headers.get("X-Amz-Target", "").endswith(".DescribeTasks"):
            doc = json.loads(data)
            for task in doc.get("tasks", []):
                for c in task.get("containers", []):
                    for k in ("cpu", "memory", "memoryReservation"):
                        if isinstance(c.get(k), int):
                            c[k] = str(c[k])
            data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def hosts_by_cluster(out, binary, root, image):
    """prom-ec2: ec2_hosts_ports = [9100, 8080], no tag. Two container instances in the
    cluster, a task on one of them registered in Cloud Map: the hosts file must list
    both hosts (also the one without a discovered task) on both ports."""
    ec2c, ecs, sd = client("ec2"), client("ecs"), client("servicediscovery", inject_host_prefix=False)
    print("EC2 hosts by cluster: two container instances in moto-test, a task on one of them")
    hosts = {}
    for name in ("moto-ecs-host-1", "moto-ecs-host-2"):
        iid, ip = run_instance(ec2c, image, {"Name": name})
        doc = json.dumps({"instanceId": iid, "region": REGION, "availabilityZone": f"{REGION}a", "accountId": ACCOUNT})
        ecs.register_container_instance(cluster="moto-test", instanceIdentityDocument=doc)
        hosts[iid] = ip
    ecs.register_task_definition(family="moto-app", requiresCompatibilities=["EC2"],
                                 containerDefinitions=[{"name": "app", "image": "app", "memory": 128}])
    task = ecs.run_task(cluster="moto-test", taskDefinition="moto-app", count=1, launchType="EC2")["tasks"][0]
    task_id = task["taskArn"].rsplit("/", 1)[1]
    sd.register_instance(
        ServiceId=out["web_service_id"], InstanceId=task_id,
        Attributes={"AWS_INSTANCE_IPV4": "10.99.1.31", "ECS_CLUSTER_NAME": "moto-test",
                    "ECS_SERVICE_NAME": "moto-app", "ECS_TASK_DEFINITION_FAMILY": "moto-app"},
    )
    check(bool(task.get("containerInstanceArn")), f"task {task_id} placed on a container instance")

    sd_dir = os.path.join(root, "by-cluster", "file_sd")
    os.makedirs(sd_dir)
    _, c = task_def(out["ec2"]["task_definition_arn"])
    print("cloudmap-sd once, with the prom-ec2 task definition's sidecar environment (shard left out)")
    # The shard (1/3 by task) could leave the one task out; the hosts come from its cluster.
    _, groups, host_groups = run_sidecar_once(binary, c["cloudmap-sd"], sd_dir,
                                              drop=("CLOUDMAP_SD_SHARD", "CLOUDMAP_SD_SHARD_KEY"))
    want = {f"{ip}:{port}" for ip in hosts.values() for port in (9100, 8080)}
    check(addresses(host_groups) == want,
          f"hosts file: both container instances on 9100 and 8080, nothing else ({sorted(want)})")

    print("Prometheus reads both files, each in its own job (promtool)")
    _, seen = prometheus_reads(c["init"], out["fargate"]["replica_placeholder"], sd_dir,
                               os.path.join(root, "by-cluster"), ("cloudmap", HOSTS_JOB))
    check({t["labels"]["__address__"] for t in seen[HOSTS_JOB]} == want, "job ec2-hosts: exactly the hosts")
    check({t["labels"]["__address__"] for t in seen["cloudmap"]} == addresses(groups),
          "job cloudmap: exactly the targets file's targets, no host")
    addr = "10.99.1.31:9102"
    written = file_labels(groups, addr)
    check(written.get("ecs_service") == "moto-app" and "ecs_task_revision" in written and "app" not in written,
          f"targets file: {addr} with ecs_service and ecs_task_revision (the EC2 task, enriched)")
    app = [t["labels"] for t in seen["cloudmap"] if t["labels"]["__address__"] == addr]
    ok = len(app) == 1 and app[0].get("app") == "moto-app" and "ecs_task_revision" not in app[0]
    check(ok, "job cloudmap: scrape_relabel_configs applied (app from ecs_service/ecs_task_family, ecs_task_revision dropped)"
          + ("" if ok else f": {json.dumps(app)}"))


def hosts_by_tag(out, binary, root, image):
    """prom-migration: ec2_hosts_ports = [9100], ec2_hosts_tag, reloader labels and the
    labeldrop of namespace|taskid."""
    mig = out["migration"]
    _, c = task_def(mig["task_definition_arn"])
    key, _, value = env_of(c["cloudmap-sd"])["CLOUDMAP_SD_EC2_HOSTS_TAG"].partition("=")

    print("EC2 hosts by tag: two more instances, one with the ec2_hosts_tag")
    ec2c = client("ec2")
    host_id, host_ip = run_instance(ec2c, image, {key: value, "Name": "moto-node-a"})
    other_id, other_ip = run_instance(ec2c, image, {key: value + "-not", "Name": "moto-node-b"})
    check(host_ip != other_ip, f"tagged host {host_id} {host_ip}, other host {other_id} {other_ip}")

    sd_dir = os.path.join(root, "by-tag", "file_sd")
    os.makedirs(sd_dir)
    print("cloudmap-sd once, with the prom-migration task definition's sidecar environment")
    env, groups, host_groups = run_sidecar_once(binary, c["cloudmap-sd"], sd_dir)
    web = [g for g in groups if "10.99.1.23:9102" in g.get("targets", [])]
    check(len(web) == 1 and {"namespace", "taskid"} <= set(web[0]["labels"]),
          "targets file: the web target, with the reloader labels namespace and taskid")
    check(addresses(host_groups) == {f"{host_ip}:9100"},
          f"hosts file: {host_ip}:9100 only (the tagged host on ec2_hosts_ports; no container instance, no untagged host)")

    print("Prometheus reads both files, each in its own job (promtool)")
    cfg_path, seen = prometheus_reads(c["init"], mig["replica_placeholder"], sd_dir, os.path.join(root, "by-tag"),
                                      ("ecs-services", HOSTS_JOB))
    check({t["labels"]["__address__"] for t in seen["ecs-services"]} == addresses(groups),
          "job ecs-services: exactly the targets file's targets")
    # Compared with the file, not with promtool's discoveredLabels (promtool 2.42 can
    # show labels that relabelling added there).
    check(seen["ecs-services"] and all(
        {"namespace", "taskid"} <= set(file_labels(groups, t["labels"]["__address__"]))
        and not {"namespace", "taskid"} & set(t["labels"])
        and t["labels"].get("instance") == file_labels(groups, t["labels"]["__address__"])["instance"]
        for t in seen["ecs-services"]),
        "job ecs-services: namespace and taskid (in the file) dropped by scrape_relabel_configs, the reloader's instance kept")
    check({t["labels"]["__address__"] for t in seen[HOSTS_JOB]} == {f"{host_ip}:9100"}
          and all(t["labels"]["job"] == HOSTS_JOB for t in seen[HOSTS_JOB]),
          "job ec2-hosts: exactly the hosts file's target, job label ec2-hosts")

    print("cloudmap-sd check lints the file_sd patterns against each file it writes")
    for what, overrides, drop in (
        ("targets file", {}, ()),
        ("hosts file", {"CLOUDMAP_SD_OUTPUT": env["CLOUDMAP_SD_EC2_HOSTS_OUTPUT"]}, ("CLOUDMAP_SD_EC2_HOSTS_OUTPUT",)),
    ):
        cenv = {k: v for k, v in env.items() if k not in drop}
        cenv.update(overrides)
        cenv["CLOUDMAP_SD_API_TIMEOUT"] = "3s"
        proc = subprocess.run([binary, "check", "--format", "json", "--prometheus-config", cfg_path],
                              env=cenv, capture_output=True, text=True, timeout=120)
        try:
            rows = json.loads(proc.stdout)["checks"]
        except ValueError:
            sys.stdout.write(proc.stdout[-2000:] + proc.stderr[-2000:])
            rows = []
        lint = [r for r in rows if r["check"] == "prometheus: file_sd glob"]
        check(len(lint) == 1 and lint[0]["status"] == "pass",
              f"check --prometheus-config, {what}: file_sd glob pass"
              + (f" ({lint[0]['detail']})" if lint else ": no such row"))


def cmd_hosts(path, binary):
    out = outputs(path)
    if not shutil.which("promtool"):
        check(False, "promtool on PATH (scripts/stack.sh install puts Prometheus's tools there)")
    global ECS_FIX_URL
    image = client("ec2").describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    root = tempfile.mkdtemp(prefix="cloudmap-sd-hosts.")
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EcsTypesFix)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    ECS_FIX_URL = f"http://127.0.0.1:{proxy.server_address[1]}"
    print("note the sidecar's ECS calls go through a fix of moto's DescribeTasks types (containers' cpu, memory)")
    try:
        hosts_by_cluster(out, binary, root, image)
        hosts_by_tag(out, binary, root, image)
    finally:
        proxy.shutdown()
        ECS_FIX_URL = None
        shutil.rmtree(root, ignore_errors=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, token=None):
    """(status, body) of GET url; the Authorization header when token is given."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return None, b""


def wait_for(what, fn, timeout=90):
    """Polls fn until it returns a true value (returned), at most timeout seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    check(False, f"{what} within {timeout}s")


def cmd_service(path, binary):
    out = outputs(path)
    ds = out["discovery_service"]
    global ECS_FIX_URL
    _, c = task_def(ds["task_definition_arn"])
    root = tempfile.mkdtemp(prefix="cloudmap-sd-service.")
    token = client("secretsmanager").get_secret_value(SecretId=ds["token_secret_arn"])["SecretString"]
    token_file = os.path.join(root, "token")
    with open(token_file, "w") as f:
        f.write(token)
    port = free_port()
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EcsTypesFix)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    ECS_FIX_URL = f"http://127.0.0.1:{proxy.server_address[1]}"
    env = sidecar_env(env_of(c["cloudmap-sd"]), root)
    env.update({
        "CLOUDMAP_SD_LISTEN": f"127.0.0.1:{port}",
        "CLOUDMAP_SD_HTTP_SD_BEARER_TOKEN_FILE": token_file,
        "CLOUDMAP_SD_INTERVAL": "1s",
        "AWS_ENDPOINT_URL_ECS": ECS_FIX_URL,
    })
    base = f"http://127.0.0.1:{port}"
    print("cloudmap-sd run with the discovery-service task definition's environment (listen and token file moved here)")
    log = open(os.path.join(root, "sidecar.log"), "w")
    proc = subprocess.Popen([binary, "run"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for("/-/ready answers 200 without a token (first complete discovery, no file)",
                 lambda: http_get(base + "/-/ready")[0] == 200)
        check(True, "/-/ready 200 without a token: ECS's health check needs none")
        status, _ = http_get(base + "/sd/targets")
        check(status == 401, f"/sd/targets without the token: 401 (got {status})")
        status, body = http_get(base + "/sd/targets", token)
        check(status == 200, f"/sd/targets with the secret's token: 200 (got {status})")
        whole = json.loads(body)
        check("10.99.1.23:9102" in addresses(whole), "the module-created web target is served")
        status, body = http_get(base + "/sd/targets?" + out["collector"]["sd_url"].split("?", 1)[1], token)
        share = json.loads(body) if status == 200 else []
        check(status == 200 and addresses(share) <= addresses(whole),
              "the collector's share (?shard=1/2&shard_key=task): 200, part of the whole")

        def hosts():
            st, b = http_get(base + "/sd/hosts", token)
            return json.loads(b) if st == 200 else None
        host_groups = wait_for("/sd/hosts to list the container instances", hosts)
        check(len(addresses(host_groups)) >= 2 and all(a.endswith(":9100") for a in addresses(host_groups)),
              f"/sd/hosts: the container instances of moto-test on 9100 ({sorted(addresses(host_groups))})")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        proxy.shutdown()
        ECS_FIX_URL = None
        if proc.returncode not in (0, -15):
            with open(os.path.join(root, "sidecar.log")) as f:
                sys.stdout.write(f.read()[-4000:])
        shutil.rmtree(root, ignore_errors=True)
    check(proc.returncode == 0, "the sidecar stops cleanly on SIGTERM")


# What tests/moto/refusals must be refused with: module call -> the start of the
# error message (variable validations name the call; preconditions only the file).
REFUSALS = {
    "hosts_on_fargate_only_fleet": ("Resource precondition failed", "ec2_hosts_ports needs enable_ec2_enrichment = true"),
    "hosts_tag_without_ports": ("Resource precondition failed", "ec2_hosts_tag selects the hosts of the ec2-hosts job"),
    "hosts_tag_malformed": ("Invalid value for variable", "ec2_hosts_tag must look like KEY=VALUE"),
    "hosts_ports_repeated": ("Invalid value for variable", "ec2_hosts_ports must be distinct"),
    "relabel_unknown_action": ("Invalid value for variable", "scrape_relabel_configs: action must be one of"),
    "hosts_job_name_taken": ("Resource precondition failed", "job_name must not be ec2-hosts"),
    "roles_in_one_account": ("Invalid value for variable", "discovery_role_arns must name one role per account"),
    "role_arn_malformed": ("Invalid value for variable", "discovery_role_arns must be IAM role ARNs"),
    "external_id_without_roles": ("Resource precondition failed", "discovery_role_external_id is for the roles"),
}


def cmd_refusals(path):
    print("Plan of tests/moto/refusals: each bad input refused, with its message")
    diags = []
    with open(path) as f:
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("type") == "diagnostic" and entry["diagnostic"]["severity"] == "error":
                diags.append(entry["diagnostic"])
    for d in diags:
        print(f"       | {d['summary']}: {d['detail'].splitlines()[0]}")
    for call, (summary, message) in REFUSALS.items():
        hits = [d for d in diags if d["summary"] == summary and d["detail"].startswith(message)]
        ok = len(hits) == 1
        if ok and summary == "Invalid value for variable":
            ok = hits[0].get("snippet", {}).get("context") == f'module "{call}"'
        check(ok, f"{call}: {summary}: {message}")
    check(len(diags) == len(REFUSALS), f"no other error ({len(diags)} errors for {len(REFUSALS)} cases)")


def main(argv):
    cmds = {
        "resources": (cmd_resources, 1),
        "drift": (cmd_drift, 1),
        "init-script": (cmd_init_script, 1),
        "discover": (cmd_discover, 2),
        "hosts": (cmd_hosts, 2),
        "service": (cmd_service, 2),
        "refusals": (cmd_refusals, 1),
    }
    if len(argv) < 2 or argv[1] not in cmds or len(argv) - 2 != cmds[argv[1]][1]:
        sys.exit(__doc__)
    fn, _ = cmds[argv[1]]
    fn(*argv[2:])


if __name__ == "__main__":
    main(sys.argv)
