#!/usr/bin/env bash
# Validates the Kubernetes manifests offline (scripts/lint.sh runs it; no cluster needed):
#   1. renders every overlay of deploy/kubernetes with kustomize (kubectl's built-in `kubectl kustomize`, or a
#      `kustomize` binary),
#   2. validates each rendering against the Kubernetes OpenAPI schemas of the oldest and newest versions we
#      target, strictly (unknown fields are errors), with `kubernetes-validate` from PyPI,
#   3. cross-checks what schemas cannot (scripts/check_k8s.py): SOULBOX_* variables the binary really reads,
#      Secret keys, volumes, selectors, Service ports, Ingress backends,
#   4. proves 2 and 3 can fail: a rendering with an unknown field and a misspelt variable must be refused.
# kubernetes-validate lives in a virtualenv outside the checkout (SOULBOX_K8S_VENV, default
# ~/.cache/soulbox-k8s-venv), made on first use with pip. Prints `N passed, N failed`; exits 1 on a failure.
set -uo pipefail
cd "$(dirname "$0")/.."

K8S_VERSIONS=(1.30.0 1.37.0)       # oldest still-supported by the major clouds at the time of writing, newest
VALIDATE_VERSION=1.37.0
venv=${SOULBOX_K8S_VENV:-$HOME/.cache/soulbox-k8s-venv}

if [ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null)" != "$VALIDATE_VERSION" ]; then
  echo "check-k8s: installing kubernetes-validate $VALIDATE_VERSION into $venv"
  { python3 -m venv "$venv" && "$venv/bin/pip" install -q "kubernetes-validate==$VALIDATE_VERSION"; } || {
    echo "check-k8s: could not install kubernetes-validate (python3-venv and PyPI needed)"
    exit 1
  }
fi

# Rendering: kubectl's built-in kustomize, a kustomize binary, or (neither is in Debian 12) scripts/render_k8s.py,
# which knows exactly the kustomize features these manifests use; where kubectl exists its rendering is compared
# with the fallback's below, so the fallback stays right.
fallback_render() { "$venv/bin/python" scripts/render_k8s.py "$1"; }
if command -v kubectl >/dev/null 2>&1; then
  render() { kubectl kustomize "$1"; }
elif command -v kustomize >/dev/null 2>&1; then
  render() { kustomize build "$1"; }
else
  echo "check-k8s: no kubectl or kustomize; rendering with scripts/render_k8s.py"
  render() { fallback_render "$1"; }
fi

out=$(mktemp -d "${TMPDIR:-/tmp}/check-k8s.XXXXXX")
trap 'rm -rf "$out"' EXIT
passed=0
failed=0
result() { # result NAME STATUS LOG
  if [ "$2" -eq 0 ]; then
    passed=$((passed + 1))
    echo "ok   $1"
  else
    failed=$((failed + 1))
    echo "FAIL $1"
    sed 's/^/     /' "$3"
  fi
}
validate() { # validate FILE: schemas of every targeted version, then the cross-checks
  local v
  for v in "${K8S_VERSIONS[@]}"; do
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "$1" || return 1
  done
  "$venv/bin/python" scripts/check_k8s.py "$1"
}

overlays=(deploy/kubernetes/overlays/*/)
[ ${#overlays[@]} -gt 0 ] || { echo "check-k8s: no overlays under deploy/kubernetes/overlays"; exit 1; }
for dir in deploy/kubernetes/base/ "${overlays[@]}"; do
  name=$(basename "$dir")
  render "$dir" >"$out/$name.yaml" 2>"$out/$name.log"
  result "render $dir" $? "$out/$name.log"
  [ -s "$out/$name.yaml" ] || continue
  validate "$out/$name.yaml" >"$out/$name.log" 2>&1
  result "validate $name (Kubernetes ${K8S_VERSIONS[*]}, strict; cross-checks)" $? "$out/$name.log"
  if command -v kubectl >/dev/null 2>&1 || command -v kustomize >/dev/null 2>&1; then
    fallback_render "$dir" >"$out/$name.fallback.yaml" 2>"$out/$name.fallback.log" &&
      "$venv/bin/python" - "$out/$name.yaml" "$out/$name.fallback.yaml" >>"$out/$name.fallback.log" 2>&1 <<'PY'
import sys, yaml
key = lambda d: (d["kind"], d["metadata"]["name"])
a, b = ({key(d): d for d in yaml.safe_load_all(open(p)) if d} for p in sys.argv[1:3])
bad = sorted(set(a) ^ set(b)) + sorted(k for k in a if k in b and a[k] != b[k])
print("differs:", bad) if bad else None
sys.exit(1 if bad else 0)
PY
    result "render_k8s.py renders $name as kustomize does" $? "$out/$name.fallback.log"
  fi
done

# The checks must be able to fail: an unknown field (schemas) and a variable the binary does not read.
sed 's/^\(\s*\)replicas:/\1replicass:/' "$out/cluster.yaml" >"$out/bad-field.yaml"
! validate "$out/bad-field.yaml" >"$out/bad-field.log" 2>&1
result "an unknown field is refused" $? "$out/bad-field.log"
sed 's/SOULBOX_ADVERTISE_URL/SOULBOX_ADVERTISE_ULR/' "$out/cluster.yaml" >"$out/bad-env.yaml"
! validate "$out/bad-env.yaml" >"$out/bad-env.log" 2>&1
result "a misspelt SOULBOX_ variable is refused" $? "$out/bad-env.log"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
