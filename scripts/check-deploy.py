#!/usr/bin/env python3
"""Structural check of deploy/: the Kubernetes manifests against each other and against the
compose file and the Dockerfiles. Run by .ci/run; needs PyYAML, and uses the `kubernetes` Python
client's models (tests/python/requirements.txt) to reject fields Kubernetes does not know.

Checks:
  * every manifest in deploy/k8s parses; every object has apiVersion, kind, a name, the fedcsg
    namespace and the part-of label; kustomization.yaml lists exactly the other manifests;
  * with the kubernetes client installed: every field of every object is a field of its
    Kubernetes type (a misspelt key fails), with scalar types checked;
  * selectors match their pod templates, every Service selects a workload, serviceName names a
    headless Service, named target ports exist, and probes are gRPC probes on the container port;
  * every secretKeyRef names a key of the Secret, every volumeMount a volume of its pod; every
    container has resource requests;
  * images equal the compose file's default image; the coordinator port, listen address, state
    directory (mounted volume), plaintext setting and the workers' coordinator URL agree between
    compose and Kubernetes; the commands run are binaries
    both Dockerfiles install;
  * worker partitions: FEDCSG_NUM_PARTITIONS equals the StatefulSet's replicas, and the compose
    workers cover partitions 0..N-1 once each; the runtime stages of both Dockerfiles agree.

Exits 0 when everything holds, 1 with one line per problem otherwise.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
NAMESPACE = "fedcsg"
PART_OF = ("app.kubernetes.io/part-of", "fedcsg")

problems: list[str] = []


def problem(msg: str) -> None:
    problems.append(msg)


def load_manifests() -> list[tuple[str, dict]]:
    objects = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            problem(f"{path.name}: does not parse: {e}")
            continue
        if not docs:
            problem(f"{path.name}: no objects")
        for doc in docs:
            where = f"{path.name}: {doc.get('kind', '?')}/{doc.get('metadata', {}).get('name', '?')}"
            objects.append((where, doc))
    return objects


# ---- field-level check against the kubernetes client's models (its OpenAPI types) ----

def model_class(api_version: str, kind: str):
    import kubernetes.client as k

    version = api_version.split("/")[-1]
    return getattr(k, version[0].upper() + version[1:] + kind, None)


def check_fields(where: str, value, type_name: str) -> None:
    import kubernetes.client as k

    if type_name == "object" or value is None:
        return  # IntOrString, quantities, free-form
    scalar = {"str": str, "int": int, "bool": bool, "float": (int, float), "datetime": str, "date": str}
    if type_name in scalar:
        ok = isinstance(value, scalar[type_name]) and not (type_name == "int" and isinstance(value, bool))
        if not ok:
            problem(f"{where}: expected {type_name}, found {value!r}")
        return
    m = re.fullmatch(r"list\[(.+)\]", type_name)
    if m:
        if not isinstance(value, list):
            problem(f"{where}: expected a list, found {value!r}")
            return
        for i, item in enumerate(value):
            check_fields(f"{where}[{i}]", item, m.group(1))
        return
    m = re.fullmatch(r"dict\(str, (.+)\)", type_name)
    if m:
        if not isinstance(value, dict):
            problem(f"{where}: expected a mapping, found {value!r}")
            return
        for key, item in value.items():
            check_fields(f"{where}.{key}", item, m.group(1))
        return
    cls = getattr(k, type_name, None)
    if cls is None:
        return
    if not isinstance(value, dict):
        problem(f"{where}: expected a {type_name} mapping, found {value!r}")
        return
    fields = {json_key: cls.openapi_types[attr] for attr, json_key in cls.attribute_map.items()}
    for key, item in value.items():
        if key not in fields:
            problem(f"{where}: unknown field {key!r} for {type_name}")
        else:
            check_fields(f"{where}.{key}", item, fields[key])


def schema_check(objects: list[tuple[str, dict]]) -> bool:
    try:
        import kubernetes.client  # noqa: F401
    except ImportError:
        print("note: the kubernetes Python client is not installed: field-level check skipped "
              "(pip install -r tests/python/requirements.txt)")
        return False
    for where, obj in objects:
        cls = model_class(obj.get("apiVersion", ""), obj.get("kind", ""))
        if cls is None:
            problem(f"{where}: unknown apiVersion/kind {obj.get('apiVersion')}/{obj.get('kind')}")
            continue
        check_fields(where, obj, cls.__name__)
    return True


# ---- cross-references ----

def pod_spec(obj: dict) -> dict | None:
    if obj["kind"] in ("StatefulSet", "Deployment", "Job"):
        return obj["spec"]["template"]["spec"]
    return None


def containers(obj: dict) -> list[dict]:
    spec = pod_spec(obj)
    return (spec.get("initContainers", []) + spec.get("containers", [])) if spec else []


def env_of(container: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def compose_default(value: str) -> str:
    """`${VAR:-default}` -> default; anything else unchanged."""
    m = re.fullmatch(r"\$\{[A-Z0-9_]+:-([^}]*)\}", str(value))
    return m.group(1) if m else str(value)


def check(objects: list[tuple[str, dict]]) -> None:
    by_kind: dict[str, dict[str, dict]] = {}
    for where, obj in objects:
        for field in ("apiVersion", "kind", "metadata"):
            if field not in obj:
                problem(f"{where}: no {field}")
        meta = obj.get("metadata", {})
        if not meta.get("name"):
            problem(f"{where}: no metadata.name")
        if obj.get("kind") != "Namespace" and meta.get("namespace") != NAMESPACE:
            problem(f"{where}: namespace is {meta.get('namespace')!r}, not {NAMESPACE!r}")
        if meta.get("labels", {}).get(PART_OF[0]) != PART_OF[1]:
            problem(f"{where}: no label {PART_OF[0]}: {PART_OF[1]}")
        by_kind.setdefault(obj.get("kind"), {})[meta.get("name")] = obj

    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization.get("resources", []))
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    if listed != present:
        problem(f"kustomization.yaml lists {sorted(listed)}, the directory holds {sorted(present)}")

    workloads = {**by_kind.get("StatefulSet", {}), **by_kind.get("Job", {})}
    services = by_kind.get("Service", {})
    secrets = by_kind.get("Secret", {})
    for name, obj in workloads.items():
        template_labels = obj["spec"]["template"]["metadata"].get("labels", {})
        selector = obj["spec"].get("selector", {}).get("matchLabels")
        if obj["kind"] != "Job":
            if not selector:
                problem(f"{obj['kind']}/{name}: no selector.matchLabels")
            elif any(template_labels.get(k) != v for k, v in selector.items()):
                problem(f"{obj['kind']}/{name}: selector {selector} does not match its template labels {template_labels}")
        if obj["kind"] == "StatefulSet":
            governing = services.get(obj["spec"].get("serviceName"))
            if governing is None:
                problem(f"StatefulSet/{name}: serviceName {obj['spec'].get('serviceName')!r} is not a Service here")
            elif governing["spec"].get("clusterIP") != "None":
                problem(f"StatefulSet/{name}: its governing Service {governing['metadata']['name']} is not headless")
        for c in containers(obj):
            cname = f"{obj['kind']}/{name}/{c['name']}"
            if not c.get("resources", {}).get("requests"):
                problem(f"{cname}: no resource requests")
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    secret = secrets.get(ref["name"])
                    keys = set((secret or {}).get("stringData", {})) | set((secret or {}).get("data", {}))
                    if ref["key"] not in keys:
                        problem(f"{cname}: env {e['name']} reads key {ref['key']!r} of Secret {ref['name']!r}, which has {sorted(keys)}")
            volumes = {v["name"] for v in pod_spec(obj).get("volumes", [])}
            volumes |= {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])}
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    problem(f"{cname}: mounts volume {m['name']!r}, which the pod does not have ({sorted(volumes)})")
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe in c:
                    grpc = c[probe].get("grpc")
                    if not grpc:
                        problem(f"{cname}: {probe} is not a gRPC health probe")
                    elif grpc.get("port") not in ports.values():
                        problem(f"{cname}: {probe} probes port {grpc.get('port')}, the container exposes {ports}")

    for name, svc in services.items():
        selector = svc["spec"].get("selector", {})
        targets = [w for w in workloads.values() if selector and all(w["spec"]["template"]["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())]
        if not targets:
            problem(f"Service/{name}: selector {selector} selects no workload")
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            for w in targets:
                named = {p.get("name"): p["containerPort"] for c in containers(w) for p in c.get("ports", [])}
                if (isinstance(target, str) and target not in named) or (isinstance(target, int) and target not in named.values()):
                    problem(f"Service/{name}: targetPort {target!r} is not a port of {w['kind']}/{w['metadata']['name']} ({named})")

    check_against_compose(by_kind, workloads, services)


def check_against_compose(by_kind: dict, workloads: dict, services: dict) -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    svcs = compose["services"]
    image = compose_default(svcs["coordinator"]["image"])
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    prebuilt = (DEPLOY / "Dockerfile.prebuilt").read_text()
    copied = re.search(r"\bcp ((?:[^\n]|\\\n)*?) /out/bin/", dockerfile)
    shipped = {Path(t).name for t in copied.group(1).split() if t != "\\"} if copied else set()
    offline = (DEPLOY / "build-images-offline.sh").read_text()
    m = re.search(r"binaries=\(([^)]*)\)", offline)
    shipped_offline = set(m.group(1).split()) | {"fedcsg-worker-ordinal"} if m else set()

    def runtime(text: str) -> list[str]:
        tail = text.split("# ---- runtime", 1)[-1].splitlines()[1:]
        return [l for l in tail if l.strip() and not l.startswith(("COPY", "FROM", "#"))]

    if runtime(dockerfile) != runtime(prebuilt):
        problem("deploy/Dockerfile and deploy/Dockerfile.prebuilt: the runtime stages differ (ENV/USER/WORKDIR/VOLUME/EXPOSE/CMD)")
    if shipped != shipped_offline:
        problem(f"deploy/Dockerfile installs {sorted(shipped)}, build-images-offline.sh {sorted(shipped_offline)}")

    commands = []
    for name, svc in svcs.items():
        if compose_default(svc.get("image", "")) != image:
            problem(f"compose service {name}: image {svc.get('image')} is not {image}")
        if svc.get("command"):
            commands.append((f"compose service {name}", svc["command"][0]))
    for w in workloads.values():
        for c in containers(w):
            where = f"{w['kind']}/{w['metadata']['name']}/{c['name']}"
            if c.get("image") != image:
                problem(f"{where}: image {c.get('image')!r}, the compose file runs {image!r}")
            if c.get("command"):
                commands.append((where, c["command"][0]))
    for where, command in commands:
        if command not in shipped:
            problem(f"{where}: runs {command!r}, which the image does not install ({sorted(shipped)})")

    # The coordinator: ports (gRPC, and HTTP for metrics and the dashboard), listen addresses,
    # how workers reach it.
    coord = svcs["coordinator"]
    published = sorted(int(str(p).rsplit(":", 1)[-1]) for p in coord.get("ports", []))
    listen = coord["environment"]["FEDCSG_LISTEN"]
    port = int(listen.rsplit(":", 1)[1])
    http_env = ("FEDCSG_METRICS_LISTEN", "FEDCSG_DASHBOARD_LISTEN")
    http_ports = {int(coord["environment"][n].rsplit(":", 1)[1]) for n in http_env if n in coord["environment"]}
    if published != sorted({port} | http_ports):
        problem(f"compose coordinator listens on {listen} (HTTP on {sorted(http_ports)}) but publishes container port(s) {published}")
    k8s_coord = by_kind.get("StatefulSet", {}).get("fedcsg-coordinator")
    if k8s_coord is None:
        problem("no StatefulSet fedcsg-coordinator")
        return
    c = containers(k8s_coord)[0]
    if env_of(c).get("FEDCSG_LISTEN") != listen:
        problem(f"k8s coordinator FEDCSG_LISTEN {env_of(c).get('FEDCSG_LISTEN')!r} != compose {listen!r}")
    if sorted(p["containerPort"] for p in c.get("ports", [])) != published:
        problem(f"k8s coordinator container ports {c.get('ports')} != compose ports {published}")
    for name in http_env:
        if str(env_of(c).get(name)) != str(coord["environment"].get(name)):
            problem(f"coordinator {name}: k8s {env_of(c).get(name)!r}, compose {coord['environment'].get(name)!r}")
    claims = {t["metadata"]["name"] for t in k8s_coord["spec"].get("volumeClaimTemplates", [])}
    mounts = {m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] in claims}
    compose_mounts = {v.split(":")[1] for v in coord.get("volumes", []) if v.split(":")[0] in compose.get("volumes", {})}
    if not claims:
        problem("StatefulSet fedcsg-coordinator has no volumeClaimTemplates (PersistentVolumeClaim)")
    if mounts != compose_mounts:
        problem(f"coordinator state: k8s mounts its claim at {mounts}, compose its named volume at {compose_mounts}")
    for name in ("FEDCSG_STATE_DIR", "FEDCSG_INSECURE", "FEDCSG_DATA"):
        if str(env_of(c).get(name)) != compose_default(coord["environment"].get(name)):
            problem(f"coordinator {name}: k8s {env_of(c).get(name)!r}, compose {coord['environment'].get(name)!r}")
    if {env_of(c).get("FEDCSG_STATE_DIR")} != mounts:
        problem(f"coordinator FEDCSG_STATE_DIR {env_of(c).get('FEDCSG_STATE_DIR')!r} is not where its claim is mounted ({mounts})")
    for name in ("FEDCSG_ENROLLMENT_TOKEN", "FEDCSG_ADMIN_TOKEN"):
        if not isinstance(env_of(c).get(name), dict):
            problem(f"k8s coordinator: {name} does not come from the Secret")
    coord_service = next((s for s in services.values() if s["spec"].get("clusterIP") != "None"
                          and s["spec"].get("selector") == k8s_coord["spec"]["selector"]["matchLabels"]), None)
    if coord_service is None:
        problem("no ClusterIP Service selects the coordinator")
        return
    url = f"http://{coord_service['metadata']['name']}:{coord_service['spec']['ports'][0]['port']}"
    if coord_service["spec"]["ports"][0]["port"] != port:
        problem(f"Service {coord_service['metadata']['name']} port {coord_service['spec']['ports'][0]['port']} != compose port {port}")
    compose_url = svcs["submit"]["environment"]["FEDCSG_COORDINATOR"]
    if not compose_url.endswith(f":{port}"):
        problem(f"compose submit connects to {compose_url}, not port {port}")
    for w in workloads.values():
        for ctr in containers(w):
            got = env_of(ctr).get("FEDCSG_COORDINATOR")
            if w is not k8s_coord and got != url:
                problem(f"{w['kind']}/{w['metadata']['name']}: FEDCSG_COORDINATOR {got!r}, the coordinator Service is {url}")

    # Workers: the ordinal picks the partition.
    k8s_workers = by_kind.get("StatefulSet", {}).get("fedcsg-worker")
    if k8s_workers is None:
        problem("no StatefulSet fedcsg-worker")
    else:
        env = env_of(containers(k8s_workers)[0])
        if str(env.get("FEDCSG_NUM_PARTITIONS")) != str(k8s_workers["spec"]["replicas"]):
            problem(f"fedcsg-worker: FEDCSG_NUM_PARTITIONS {env.get('FEDCSG_NUM_PARTITIONS')} != replicas {k8s_workers['spec']['replicas']}")
        if containers(k8s_workers)[0].get("command") != ["fedcsg-worker-ordinal"]:
            problem("fedcsg-worker: does not start through fedcsg-worker-ordinal (the ordinal would not pick the partition)")
        if "POD_NAME" not in env:
            problem("fedcsg-worker: no POD_NAME from the downward API")
    compose_workers = {n: s for n, s in svcs.items() if n.startswith("worker-")}
    ids = sorted(int(s["environment"]["FEDCSG_PARTITION_ID"]) for s in compose_workers.values())
    counts = {compose_default(s["environment"]["FEDCSG_NUM_PARTITIONS"]) for s in compose_workers.values()}
    if counts != {str(len(compose_workers))} or ids != list(range(len(compose_workers))):
        problem(f"compose workers: partitions {ids} of {counts} for {len(compose_workers)} workers")
    if "healthcheck" not in coord or "fedcsg-health" not in coord["healthcheck"]["test"]:
        problem("compose coordinator: no fedcsg-health healthcheck")


def main() -> int:
    objects = load_manifests()
    schema = schema_check(objects)
    check(objects)
    for p in problems:
        print(f"deploy check: {p}")
    if problems:
        return 1
    print(f"deploy check: {len(objects)} Kubernetes objects in {K8S.relative_to(ROOT)} consistent with each other, "
          f"docker-compose.yml and the Dockerfiles{' (every field known to Kubernetes)' if schema else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
