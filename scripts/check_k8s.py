#!/usr/bin/env python3
"""Cross-checks rendered Kubernetes manifests (deploy/kubernetes) where the schemas cannot: every SOULBOX_*
variable a container sets is one the `soulbox` binary reads (a renamed flag would otherwise be ignored
silently), every Secret/ConfigMap key and volume a pod uses is defined, and selectors, Services and the
Ingress point at things that exist. Usage: check_k8s.py RENDERED.yaml... (needs PyYAML). Exit 1 on a problem.
"""

import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Where the binary's environment variables are declared: clap `env = "..."` and std::env reads.
SOURCES = [ROOT / "crates/soulbox-cli/src", ROOT / "crates/soulbox-server/src"]


def known_env() -> set[str]:
    names = set()
    for src in SOURCES:
        for f in src.rglob("*.rs"):
            names.update(re.findall(r'"(SOULBOX_[A-Z0-9_]+)"', f.read_text()))
    return names


def pods(doc):
    spec = doc.get("spec", {})
    if doc["kind"] in ("Deployment", "DaemonSet", "StatefulSet"):
        return [spec["template"]]
    return []


def check(docs, env_names) -> list[str]:
    problems = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    secrets = {
        n: set(d.get("stringData", {})) | set(d.get("data", {})) for n, d in by_kind.get("Secret", {}).items()
    }
    configmaps = {n: set(d.get("data", {})) for n, d in by_kind.get("ConfigMap", {}).items()}
    pod_labels = []
    for d in docs:
        for tmpl in pods(d):
            where = f'{d["kind"]}/{d["metadata"]["name"]}'
            labels = tmpl["metadata"].get("labels", {})
            pod_labels.append((labels, tmpl))
            selector = d["spec"]["selector"].get("matchLabels", {})
            if any(labels.get(k) != v for k, v in selector.items()):
                problems.append(f"{where}: selector {selector} does not match its pod labels {labels}")
            volumes = {v["name"]: v for v in tmpl["spec"].get("volumes", [])}
            claims = {c["metadata"]["name"] for c in d["spec"].get("volumeClaimTemplates", [])}
            for c in tmpl["spec"]["containers"]:
                for e in c.get("env", []):
                    name = e["name"]
                    if name.startswith("SOULBOX_") and name not in env_names:
                        problems.append(f"{where}: {name} is not read by the soulbox binary")
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref and ref["key"] not in secrets.get(ref["name"], set()):
                        problems.append(f'{where}: {name} wants secret {ref["name"]} key {ref["key"]}, not defined')
                for m in c.get("volumeMounts", []):
                    if m["name"] not in volumes and m["name"] not in claims:
                        problems.append(f'{where}: mount {m["name"]} has no volume')
                if c.get("image") == "soulbox":
                    args = c.get("args", [])
                    if not ({"server", "node"} & set(args)):
                        problems.append(f"{where}: soulbox runs neither `server` nor `node`: {args}")
            for v in volumes.values():
                cm = v.get("configMap")
                if cm and cm["name"] not in configmaps:
                    problems.append(f'{where}: volume {v["name"]} wants ConfigMap {cm["name"]}, not defined')
    services = by_kind.get("Service", {})
    for name, svc in services.items():
        sel = svc["spec"].get("selector", {})
        targets = [t for labels, t in pod_labels if all(labels.get(k) == v for k, v in sel.items())]
        if not targets:
            problems.append(f"Service/{name}: selector {sel} matches no pod")
        ports = {p.get("name") for t in targets for c in t["spec"]["containers"] for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            tp = p.get("targetPort")
            if isinstance(tp, str) and tp not in ports:
                problems.append(f"Service/{name}: targetPort {tp} is no container port of its pods")
    for name, ing in by_kind.get("Ingress", {}).items():
        for rule in ing["spec"].get("rules", []):
            for path in rule["http"]["paths"]:
                be = path["backend"]["service"]
                svc = services.get(be["name"])
                if svc is None:
                    problems.append(f'Ingress/{name}: backend {be["name"]} is no Service')
                elif be["port"].get("name") not in {p.get("name") for p in svc["spec"]["ports"]} | {None}:
                    problems.append(f'Ingress/{name}: Service {be["name"]} has no port {be["port"]}')
    return problems


def main() -> int:
    env_names = known_env()
    if "SOULBOX_NODE_TOKEN" not in env_names:
        print("check_k8s: found no SOULBOX_* variables in the sources; is the checkout complete?")
        return 1
    failed = False
    for path in sys.argv[1:]:
        docs = [d for d in yaml.safe_load_all(pathlib.Path(path).read_text()) if d]
        problems = check(docs, env_names)
        for p in problems:
            print(f"{path}: {p}")
        failed |= bool(problems)
        print(f"check_k8s: {path}: {len(docs)} objects, {len(problems)} problems")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
