"""Renders a deploy/kubernetes kustomization without kubectl or kustomize (scripts/check-k8s.sh's fallback on a
machine that has neither: Debian 12 packages no kustomize). It knows exactly the kustomize features our
manifests use, and refuses any other, so a new feature cannot be silently mis-rendered:
`resources` (files and directories), `namespace`, `labels` (pairs, metadata only), `images` (newName/newTag) and
`patches` (strategic merge by kind and name: maps merge, lists of named items merge by name, other lists are
replaced). Usage: render_k8s.py DIR > rendered.yaml"""

import os
import sys

import yaml

KNOWN = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}


def merge(base, patch):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(x, dict) and "name" in x for x in base + patch):
        out = list(base)
        for item in patch:
            at = next((i for i, x in enumerate(out) if x["name"] == item["name"]), None)
            if at is None:
                out.append(item)
            else:
                out[at] = merge(out[at], item)
        return out
    return patch


def set_images(node, images):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "image" and isinstance(value, str):
                name, _, _ = value.partition(":")
                for image in images:
                    if image["name"] == name:
                        node[key] = f"{image.get('newName', name)}:{image.get('newTag', 'latest')}"
            else:
                set_images(value, images)
    elif isinstance(node, list):
        for value in node:
            set_images(value, images)


def render(directory):
    with open(os.path.join(directory, "kustomization.yaml")) as f:
        k = yaml.safe_load(f)
    unknown = set(k) - KNOWN
    if unknown:
        sys.exit(f"render_k8s: {directory}: kustomization fields this fallback does not know: {sorted(unknown)}")
    docs = []
    for resource in k.get("resources", []):
        path = os.path.join(directory, resource)
        if os.path.isdir(path):
            docs.extend(render(path))
        else:
            with open(path) as f:
                docs.extend(d for d in yaml.safe_load_all(f) if d)
    for patch_ref in k.get("patches", []):
        if set(patch_ref) != {"path"}:
            sys.exit(f"render_k8s: {directory}: only file patches are known, not {patch_ref}")
        with open(os.path.join(directory, patch_ref["path"])) as f:
            patch = yaml.safe_load(f)
        key = (patch["kind"], patch["metadata"]["name"])
        targets = [i for i, d in enumerate(docs) if (d["kind"], d["metadata"]["name"]) == key]
        if len(targets) != 1:
            sys.exit(f"render_k8s: {directory}: patch {patch_ref['path']} matches {len(targets)} resources")
        docs[targets[0]] = merge(docs[targets[0]], patch)
    for doc in docs:
        meta = doc.setdefault("metadata", {})
        if "namespace" in k and doc["kind"] not in CLUSTER_SCOPED:
            meta["namespace"] = k["namespace"]
        for group in k.get("labels", []):
            if set(group) != {"pairs"}:
                sys.exit(f"render_k8s: {directory}: only label pairs for metadata are known, not {group}")
            meta.setdefault("labels", {}).update(group["pairs"])
        set_images(doc, k.get("images", []))
    return docs


if __name__ == "__main__":
    yaml.safe_dump_all(render(sys.argv[1].rstrip("/")), sys.stdout, sort_keys=False)
