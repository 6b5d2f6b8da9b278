#!/usr/bin/env bash
# `make e2e-kind`: StreamFlow on a real Kubernetes with the real upstream operators.
#   Needs Docker and network access (kind nodes, Helm charts, Strimzi/Flink/CNPG images).
#   Not run by `make test` or CI: there the local control plane e2e (tests/e2e) runs instead.
# Steps: a kind cluster -> Strimzi, the Flink Kubernetes Operator, CloudNativePG from their charts
# (pinned in config/versions.env) -> a one-node KRaft Kafka -> our three images (make images),
# loaded into the nodes -> our chart -> the kind sample FraudPipeline -> Ready -> events in ->
# alerts out. KEEP=1 keeps the cluster afterwards (default: deleted on success).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../../config/versions.env
source "$root/config/versions.env"
cache=${STREAMFLOW_CACHE:-$HOME/.cache/streamflow}
cluster=${KIND_CLUSTER:-streamflow}
work="$root/.kind"
export KUBECONFIG="$work/kubeconfig"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/pyproject.toml" | head -1)
registry=${IMAGE_REGISTRY:-localhost/streamflow}
log() { printf '[e2e-kind %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 1; }

command -v docker >/dev/null && docker info >/dev/null 2>&1 ||
  die "Docker is needed (kind runs its nodes as Docker containers); the local control plane e2e needs none: make test"
mkdir -p "$work"

# Tools: helm and kubectl as the local e2e builds them; kind from its Go module.
"$root/e2e/cluster/build.sh" helm kubectl
helm="$cache/bin/helm-$HELM_VERSION"
kubectl="$cache/bin/kubectl-$KUBERNETES_VERSION"
kind="$cache/bin/kind-$KIND_VERSION"
if [ ! -x "$kind" ]; then
  log "kind $KIND_VERSION"
  GOBIN="$cache/src/gobin-kind" go install "sigs.k8s.io/kind@v$KIND_VERSION"
  mv "$cache/src/gobin-kind/kind" "$kind"
fi
k() { "$kubectl" "$@"; }

log "cluster $cluster (Kubernetes v$KUBERNETES_VERSION)"
if ! "$kind" get clusters | grep -qx "$cluster"; then
  "$kind" create cluster --name "$cluster" --image "kindest/node:v$KUBERNETES_VERSION" --wait 120s
fi
"$kind" get kubeconfig --name "$cluster" > "$KUBECONFIG"

log "Strimzi $STRIMZI_VERSION, Flink Kubernetes Operator $FLINK_OPERATOR_VERSION, CloudNativePG chart $CNPG_CHART_VERSION"
"$helm" upgrade --install strimzi oci://quay.io/strimzi-helm/strimzi-kafka-operator \
  --version "$STRIMZI_VERSION" -n kafka --create-namespace --set watchAnyNamespace=true --wait
"$helm" repo add flink-operator \
  "https://downloads.apache.org/flink/flink-kubernetes-operator-$FLINK_OPERATOR_VERSION/" --force-update
# The webhook needs cert-manager; the operator works without it (validation happens on apply).
"$helm" upgrade --install flink-operator flink-operator/flink-kubernetes-operator \
  --version "$FLINK_OPERATOR_VERSION" -n flink-operator --create-namespace \
  --set webhook.create=false --wait
"$helm" repo add cnpg https://cloudnative-pg.github.io/charts --force-update
"$helm" upgrade --install cnpg cnpg/cloudnative-pg --version "$CNPG_CHART_VERSION" \
  -n cnpg-system --create-namespace --wait

log "Kafka cluster kafka/events (one KRaft node)"
k apply --server-side -f "$here/kafka.yaml"
k -n kafka wait kafka/events --for=condition=Ready --timeout=600s

log "images $registry/{operator,jobs,airflow}:$version"
IMAGE_REGISTRY=$registry make -C "$root" images
for image in operator jobs airflow; do
  archive="$work/$image.tar"
  "$root/config/images/podman.sh" save --format docker-archive -o "$archive" "$registry/$image:$version"
  "$kind" load image-archive "$archive" --name "$cluster"
  rm -f "$archive"
done

log "chart streamflow-operator"
"$helm" upgrade --install streamflow "$root/chart/streamflow-operator" -n streamflow-system \
  --create-namespace --set "image.repository=$registry/operator" --set image.tag="$version" \
  --set image.pullPolicy=Never --set networkPolicy.enabled=false --wait

log "the sample pipeline (fraud/payments, sized for one node)"
k create namespace fraud --dry-run=client -o yaml | k apply -f -
k create namespace airflow --dry-run=client -o yaml | k apply -f -
make -C "$root" publish-model MODEL_NAMESPACE=fraud
sed "s|@JOBS_IMAGE@|$registry/jobs:$version|" "$here/fraudpipeline.yaml" | k apply -f -
k -n fraud wait fraudpipeline/payments --for=condition=Ready --timeout=900s ||
  { k -n fraud describe fraudpipeline/payments; die "the pipeline did not become Ready"; }

log "events in, alerts out"
events="$work/events.jsonl"
(cd "$root" && uv run streamflow generate --seed 11 --customers 200 --days 3 --output "$events")
broker=$(k -n kafka get pods -l strimzi.io/cluster=events,strimzi.io/kind=Kafka -o name | head -1)
k -n kafka exec -i "$broker" -- bin/kafka-console-producer.sh --bootstrap-server localhost:9092 \
  --topic fraud-payments-transactions < "$events"
alerts=$(k -n kafka exec "$broker" -- bin/kafka-console-consumer.sh --bootstrap-server localhost:9092 \
  --topic fraud-payments-alerts --from-beginning --isolation-level read_committed \
  --timeout-ms 180000 --max-messages 10 2>/dev/null | grep -c '"transaction_id"' || true)
[ "$alerts" -ge 1 ] || die "no alert came out of fraud-payments-alerts in 3 minutes"
log "ok: $alerts alerts read from fraud-payments-alerts"
[ "${KEEP:-0}" = 1 ] || "$kind" delete cluster --name "$cluster"
