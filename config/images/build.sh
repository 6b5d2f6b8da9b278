#!/usr/bin/env bash
# Build StreamFlow's three images with podman (no Docker needed): `make images` runs this.
#   config/images/build.sh [operator] [jobs] [airflow]     (no argument: all three)
# 1. The base: Debian's minbase from Debian's packages (debootstrap), imported once into
#    podman's store as localhost/streamflow/debian:<suite>. With a registry, pass any other base
#    instead: BASE=docker.io/library/debian:bookworm-slim config/images/build.sh
# 2. The context (build/images/): the wheel (`make wheel`: with the compiled hot path), the
#    locked versions (uv export), the Flink connector jars, the DAGs, the entrypoints.
# 3. podman build of each Containerfile; layers are cached in podman's store, so a rebuild after
#    a code change redoes only the wheel's layer.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../versions.env
source "$root/config/versions.env"
podman="$here/podman.sh"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/pyproject.toml" | head -1)
suite=${DEBIAN_SUITE:-bookworm}
local_base="localhost/streamflow/debian:$suite"
base=${BASE:-$local_base}
# The references the chart and the sample FraudPipeline use (ghcr.io/streamflow/<image>:<version>);
# built here they are local tags only: nothing is pushed.
registry=${IMAGE_REGISTRY:-ghcr.io/streamflow}
context="$root/build/images"
log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

build_base() {
  "$podman" image exists "$local_base" && return 0
  log "base $local_base from Debian's packages (debootstrap --variant=minbase $suite)"
  local dir mirror
  dir=$(mktemp -d "${TMPDIR:-/tmp}/streamflow-debootstrap-XXXXXX")
  # The machine's own Debian mirror (apt's sources), else Debian's.
  mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
    sed -n 's/^URIs: *//p;s/^deb \(http[^ ]*\) .*/\1/p' | grep -m1 '/debian$' || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  # Debian's keyring named explicitly: on another distribution (e.g. Ubuntu CI runners)
  # debootstrap would not trust Debian's Release files by default.
  debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
    "$suite" "$dir" "$mirror" >"$dir.log" 2>&1 ||
    { tail -20 "$dir.log" >&2; exit 1; }
  cat >"$dir/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb ${mirror%/debian}/debian-security $suite-security main
SOURCES
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  # Imported under a temporary tag, then renamed: a killed run never leaves a half base.
  tar -C "$dir" -c . | "$podman" import --change 'CMD ["/bin/bash"]' - "$local_base-partial" >/dev/null
  "$podman" tag "$local_base-partial" "$local_base"
  "$podman" untag "$local_base-partial" "$local_base-partial"
  rm -rf "$dir" "$dir.log"
}

prepare_context() {
  local wheel
  wheel=$(ls "$root"/dist/streamflow-"$version"-cp*.whl 2>/dev/null | head -1)
  [ -n "$wheel" ] || { echo "no wheel in dist/: run \`make wheel\`" >&2; exit 1; }
  rm -rf "$context.new" && mkdir -p "$context.new/jars" "$context.new/dags"
  cp "$here"/*.Containerfile "$here"/*.sh "$context.new/"
  cp -r "$here/requirements" "$context.new/"
  cp "$wheel" "$context.new/"
  cp "$(command -v uv)" "$context.new/uv"
  (cd "$root" && uv export --frozen --no-dev --no-hashes --no-emit-project --no-header \
    --quiet -o "$context.new/constraints.txt")
  local jars
  jars=$(cd "$root" && uv run --no-sync python -c \
    'from streamflow_jobs.infra import flink_connector_jars as j; print("\n".join(map(str, j())))')
  for jar in $jars; do cp "$jar" "$context.new/jars/"; done
  cp "$root"/jobs/dags/*.py "$context.new/dags/"
  rm -rf "$context" && mv "$context.new" "$context"
}

# Where the machine reaches the package registries through a TLS-intercepting proxy, its CA
# bundle is lent to the build's RUN steps (mounted, never copied into a layer).
ca_args=()
if [ -n "${SSL_CERT_FILE:-}" ] && [ -f "$SSL_CERT_FILE" ]; then
  ca_args=(-v "$SSL_CERT_FILE:/run/streamflow-build-ca.crt:ro"
    --build-arg "BUILD_CA_BUNDLE=/run/streamflow-build-ca.crt")
fi

build_image() {
  local name=$1
  log "$registry/$name:$version (base $base)"
  # NO_CACHE=1: every layer rebuilt (`make bench-images` measures a cold build with it).
  "$podman" build --network host --layers --format docker "${ca_args[@]}" \
    ${NO_CACHE:+--no-cache} \
    --build-arg "BASE=$base" --build-arg "VERSION=$version" --build-arg "FLINK_VERSION=$FLINK_VERSION" \
    -f "$context/$name.Containerfile" -t "$registry/$name:$version" "$context"
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(operator jobs airflow)
[ "$base" != "$local_base" ] || build_base
prepare_context
for t in "${targets[@]}"; do
  case "$t" in
    operator|jobs|airflow) build_image "$t" ;;
    *) echo "unknown image: $t (operator, jobs, airflow)" >&2; exit 2 ;;
  esac
done
