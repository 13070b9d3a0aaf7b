#!/usr/bin/env bash
# Build the kustomize binary that kubepci's Kustomize loader runs.
#
# Why build instead of download: only package registries are reachable here, so kustomize is
# compiled from its Go modules (through the Go module proxy) at a pinned release. The PyPI
# bindings (pykustomize) need Python >= 3.14 and a Python re-implementation would not behave
# like the real tool, so the real Go code it is. The result is cached per version; only the
# first run on a machine pays for the build (about 1-3 minutes on 2 cores, more under load).
#
# Output: ${KUBEPCI_TOOLS_CACHE:-$HOME/.cache/kubepci/tools}/kustomize-<version>
# Prints the binary's path on stdout. Idempotent and safe to run concurrently (flock).
# Runs unattended (CI): it never reads standard input.
set -euo pipefail

# v5.8.2 is the newest release whose go.mod (go 1.26.0, sigs.k8s.io/kustomize/api v0.21.2)
# builds with Go 1.26; v5.8.3 needs Go 1.27. Keep in step with KUSTOMIZE_VERSION in
# src/kubepci/inventory/loaders/kustomize.py.
KUSTOMIZE_VERSION="v5.8.2"

cache_root="${KUBEPCI_TOOLS_CACHE:-${HOME}/.cache/kubepci/tools}"
out_bin="${cache_root}/kustomize-${KUSTOMIZE_VERSION}"

log() { printf 'build-kustomize: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

works() {
  [[ -x "$1" ]] && "$1" version </dev/null >/dev/null 2>&1
}

if works "${out_bin}"; then
  log "kustomize ${KUSTOMIZE_VERSION} already built"
  printf '%s\n' "${out_bin}"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "go is not on PATH (Go 1.26.x or newer is needed)"
mkdir -p "${cache_root}"

# One build at a time per cache; a second caller waits and then finds the binary.
exec 9>"${out_bin}.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
fi
if works "${out_bin}"; then
  log "kustomize ${KUSTOMIZE_VERSION} built by a concurrent run"
  printf '%s\n' "${out_bin}"
  exit 0
fi

work_dir="$(mktemp -d "${cache_root}/.kustomize-build.XXXXXX")"
trap 'rm -rf "${work_dir}"' EXIT

log "building sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION} with $(go env GOVERSION)"
start=${SECONDS}
# GOTOOLCHAIN=local: never fetch another Go toolchain; GOFLAGS keeps the caller's settings.
(
  cd "${work_dir}"
  GOBIN="${work_dir}/bin" GOTOOLCHAIN=local CGO_ENABLED=0 \
    go install -trimpath -ldflags='-s -w' \
    "sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}" </dev/null
)
built="${work_dir}/bin/kustomize"
works "${built}" || die "the built kustomize does not run"
# Rename in the same directory so readers never see a half-written binary.
mv -f "${built}" "${out_bin}.tmp"
mv -f "${out_bin}.tmp" "${out_bin}"
log "built ${out_bin} ($("${out_bin}" version) in $((SECONDS - start))s)"
printf '%s\n' "${out_bin}"
