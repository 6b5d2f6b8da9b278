#!/bin/sh
# Refuse to start on a stale or missing compiled hot path (STREAMFLOW_REQUIRE_COMPILED=1 makes
# streamflow_jobs/_compiled.py require every compiled module), with one line instead of a
# traceback; then run the command.
if ! err=$(python3 -c 'import streamflow_jobs' 2>&1); then
  echo "streamflow: refusing to start: $(printf '%s\n' "$err" | tail -n 1)" >&2
  exit 78
fi
# Seed the writable cache (STREAMFLOW_CACHE, under /tmp) with what the image prebuilt there:
# the Airflow image's parsed dbt manifest, which every DAG parse would otherwise rebuild (~5 s).
if [ -d /opt/streamflow/cache ] && [ -n "${STREAMFLOW_CACHE:-}" ]; then
  mkdir -p "$STREAMFLOW_CACHE" && cp -Rn /opt/streamflow/cache/. "$STREAMFLOW_CACHE/" 2>/dev/null
fi
exec "$@"
