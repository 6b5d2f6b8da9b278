#!/usr/bin/env bash
# Stop what e2e/cluster/up.sh started (its data stays in .cluster/ until `make clean`).
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${STREAMFLOW_CLUSTER_DIR:-$root/.cluster}
for name in kwok kube-controller-manager kube-scheduler kube-apiserver etcd; do
  pidfile="$dir/$name.pid"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null && for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
done
echo "[cluster] stopped"
