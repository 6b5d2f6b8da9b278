#!/usr/bin/env bash
# Start a real Kubernetes control plane on 127.0.0.1 without Docker (envtest-style):
# etcd + kube-apiserver + kube-controller-manager (garbage collection, service accounts), then
# install the CRDs StreamFlow reconciles against. Idempotent: a running cluster is reused.
# Output: .cluster/kubeconfig. Stop with e2e/cluster/down.sh. Binaries: e2e/cluster/build.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
source "$root/config/versions.env"
cache=${STREAMFLOW_CACHE:-$HOME/.cache/streamflow}
dir=${STREAMFLOW_CLUSTER_DIR:-$root/.cluster}
etcd_port=${STREAMFLOW_ETCD_PORT:-23790}
api_port=${STREAMFLOW_API_PORT:-26443}
kubeconfig="$dir/kubeconfig"
log() { printf '[cluster] %s\n' "$*" >&2; }
# kubectl from the machine, else built from the same Kubernetes module (cached).
if ! command -v kubectl >/dev/null 2>&1; then
  "$root/e2e/cluster/build.sh" kubectl
  mkdir -p "$cache/path" && ln -sf "$cache/bin/kubectl-$KUBERNETES_VERSION" "$cache/path/kubectl"
  export PATH="$cache/path:$PATH"
fi

ready() { kubectl --kubeconfig "$kubeconfig" get --raw /readyz >/dev/null 2>&1; }
if [ -f "$kubeconfig" ] && ready; then
  log "already running ($kubeconfig)"
  "$root/e2e/cluster/install-crds.sh" "$kubeconfig"  # this checkout's CRDs, not a stale copy
  exit 0
fi

"$root/e2e/cluster/build.sh" etcd kube-apiserver kube-controller-manager
bin="$cache/bin"
"$root/e2e/cluster/down.sh" >/dev/null 2>&1 || true

# Another cluster (a developer's, another checkout's) may hold the default ports: take free ones.
busy() { python3 -c 'import socket, sys; s = socket.socket(); sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)' "$1"; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
if busy "$api_port"; then api_port=$(free_port); log "default API port busy: using $api_port"; fi
if busy "$etcd_port" || busy "$((etcd_port + 1))"; then
  etcd_port=$(free_port); while busy "$((etcd_port + 1))"; do etcd_port=$(free_port); done
  log "default etcd ports busy: using $etcd_port"
fi
mkdir -p "$dir/pki" "$dir/logs"
rm -rf "$dir/etcd"
pki="$dir/pki"

# ---- certificates (a throwaway CA per cluster) ----
if [ ! -f "$pki/ca.crt" ]; then
  log "certificates"
  openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=streamflow-test-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  cat > "$pki/serving.ext" <<EXT
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
EXT
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$pki/serving.key" \
    -out "$pki/serving.csr" 2>/dev/null
  openssl x509 -req -in "$pki/serving.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 365 -extfile "$pki/serving.ext" -out "$pki/serving.crt" 2>/dev/null
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
fi

client() {  # name CN O
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$2${3:+/O=$3}" -keyout "$pki/$1.key" \
    -out "$pki/$1.csr" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' > "$pki/client.ext"
  openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 365 -extfile "$pki/client.ext" -out "$pki/$1.crt" 2>/dev/null
}
[ -f "$pki/admin.crt" ] || client admin streamflow-admin system:masters
[ -f "$pki/controller-manager.crt" ] || client controller-manager system:kube-controller-manager
[ -f "$pki/scheduler.crt" ] || client scheduler system:kube-scheduler

kubeconfig_for() {  # file user
  cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: streamflow
  cluster: {server: "https://127.0.0.1:$api_port", certificate-authority: "$pki/ca.crt"}
users:
- name: $2
  user: {client-certificate: "$pki/$2.crt", client-key: "$pki/$2.key"}
contexts:
- name: streamflow
  context: {cluster: streamflow, user: $2, namespace: default}
current-context: streamflow
KC
}
kubeconfig_for "$kubeconfig" admin
kubeconfig_for "$dir/controller-manager.kubeconfig" controller-manager
kubeconfig_for "$dir/scheduler.kubeconfig" scheduler

log "etcd $ETCD_VERSION"
nohup "$bin/etcd-$ETCD_VERSION" --data-dir "$dir/etcd" --unsafe-no-fsync \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
  --initial-cluster "default=http://127.0.0.1:$((etcd_port + 1))" \
  > "$dir/logs/etcd.log" 2>&1 &
echo $! > "$dir/etcd.pid"

# Audit only what the operator's ServiceAccount sends (the e2e suite and `make bench` run the
# operator with it): `make bench` counts its requests at idle from this log.
cat > "$dir/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts:streamflow-system"]
  - level: None
POLICY

log "kube-apiserver $KUBERNETES_VERSION"
nohup "$bin/kube-apiserver-$KUBERNETES_VERSION" \
  --etcd-servers "http://127.0.0.1:$etcd_port" --bind-address 127.0.0.1 --secure-port "$api_port" \
  --tls-cert-file "$pki/serving.crt" --tls-private-key-file "$pki/serving.key" \
  --client-ca-file "$pki/ca.crt" --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range 10.0.0.0/24 --authorization-mode RBAC --allow-privileged=true \
  --disable-admission-plugins ServiceAccount --cert-dir "$dir/pki/apiserver" \
  --audit-policy-file "$dir/audit-policy.yaml" --audit-log-path "$dir/logs/audit.log" \
  --audit-log-maxsize 200 --audit-log-maxbackup 1 \
  > "$dir/logs/kube-apiserver.log" 2>&1 &
echo $! > "$dir/kube-apiserver.pid"
for _ in $(seq 1 120); do ready && break; sleep 0.5; done
ready || { tail -20 "$dir/logs/kube-apiserver.log" >&2; log "apiserver did not become ready"; exit 1; }

log "kube-controller-manager $KUBERNETES_VERSION"
nohup "$bin/kube-controller-manager-$KUBERNETES_VERSION" \
  --kubeconfig "$dir/controller-manager.kubeconfig" --leader-elect=false \
  --use-service-account-credentials --service-account-private-key-file "$pki/sa.key" \
  --root-ca-file "$pki/ca.crt" --bind-address 127.0.0.1 --secure-port 0 \
  --controllers "*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route" \
  > "$dir/logs/kube-controller-manager.log" 2>&1 &
echo $! > "$dir/kube-controller-manager.pid"

# Optional (STREAMFLOW_CLUSTER_NODES=1, set by `make cluster`): a scheduler and kwok with one fake
# node, so Deployments and Jobs get pods that become Ready (used to install Helm charts for real).
if [ "${STREAMFLOW_CLUSTER_NODES:-0}" = 1 ]; then
  "$root/e2e/cluster/build.sh" kube-scheduler kwok
  log "kube-scheduler $KUBERNETES_VERSION, kwok $KWOK_VERSION"
  nohup "$bin/kube-scheduler-$KUBERNETES_VERSION" --kubeconfig "$dir/scheduler.kubeconfig" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 \
    > "$dir/logs/kube-scheduler.log" 2>&1 &
  echo $! > "$dir/kube-scheduler.pid"
  kwok_src=$(cd /tmp && go mod download -json "sigs.k8s.io/kwok@v$KWOK_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  for f in "$kwok_src"/kustomize/stage/node/fast/node-*.yaml "$kwok_src"/kustomize/stage/pod/fast/pod-*.yaml; do
    printf -- '---\n'; cat "$f"; printf '\n'
  done > "$dir/kwok-stages.yaml"
  nohup "$bin/kwok-$KWOK_VERSION" --kubeconfig "$kubeconfig" --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake --cidr 10.0.1.0/24 \
    --node-ip 127.0.0.1 --config "$dir/kwok-stages.yaml" > "$dir/logs/kwok.log" 2>&1 &
  echo $! > "$dir/kwok.pid"
  kubectl --kubeconfig "$kubeconfig" apply -f - >/dev/null <<NODE
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {kubernetes.io/hostname: kwok-node-0, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok}
NODE
fi

"$root/e2e/cluster/install-crds.sh" "$kubeconfig"
log "ready: export KUBECONFIG=$kubeconfig"
