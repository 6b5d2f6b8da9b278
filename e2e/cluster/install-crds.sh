#!/usr/bin/env bash
# Install the CRDs the operator reconciles against, from their upstream artifacts:
#   FraudPipeline (ours, crds/), CloudNativePG (Go module, config/crd/bases), Flink Kubernetes
#   Operator (Maven jar flink-kubernetes-operator-api, META-INF/fabric8) and a KafkaTopic v1 stand-in.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
source "$root/config/versions.env"
kubeconfig=${1:-$root/.cluster/kubeconfig}
cache=${STREAMFLOW_CACHE:-$HOME/.cache/streamflow}
out="$cache/crds"
[ -x "$cache/path/kubectl" ] && export PATH="$cache/path:$PATH"
mkdir -p "$out"
k() { kubectl --kubeconfig "$kubeconfig" "$@"; }

cnpg=$(cd /tmp && go mod download -json "github.com/cloudnative-pg/cloudnative-pg@v$CNPG_VERSION" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
jar="$cache/jars/flink-kubernetes-operator-api-$FLINK_OPERATOR_API_VERSION.jar"
if [ ! -f "$jar" ]; then
  mvn -q dependency:copy -Dartifact="org.apache.flink:flink-kubernetes-operator-api:$FLINK_OPERATOR_API_VERSION" \
    -DoutputDirectory="$cache/jars"
fi
flink="$out/flinkdeployments-$FLINK_OPERATOR_API_VERSION.yaml"
if [ ! -f "$flink" ]; then
  python3 -c 'import sys, zipfile; sys.stdout.write(zipfile.ZipFile(sys.argv[1]).read(
    "META-INF/fabric8/flinkdeployments.flink.apache.org-v1.yml").decode())' "$jar" |
    python3 "$root/e2e/cluster/extend_flink_versions.py" > "$flink.tmp" && mv "$flink.tmp" "$flink"
fi

# Server-side apply: CNPG's Cluster CRD is too large for client-side apply's annotation.
for f in "$root"/crds/*.yaml "$cnpg/config/crd/bases/postgresql.cnpg.io_clusters.yaml" \
  "$cnpg/config/crd/bases/postgresql.cnpg.io_databases.yaml" "$flink" \
  "$root"/e2e/crds/*.yaml; do
  k apply --server-side --force-conflicts -f "$f" >/dev/null
done
for _ in 1 2 3 4 5; do
  k wait --for condition=Established --timeout=30s crd --all >/dev/null 2>&1 && break
  sleep 1  # right after create, wait can fail once with an accessor error
done
echo "[cluster] CRDs installed: $(k get crd -o name | tr '\n' ' ')" >&2
