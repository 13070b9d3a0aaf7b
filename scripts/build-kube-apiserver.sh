#!/usr/bin/env bash
# Build a real kube-apiserver (and make sure etcd is installed) for kubepci's end-to-end tests.
#
# Why build instead of download: the only outside sources reachable here are package
# registries, so the apiserver is linked from the Kubernetes Go modules (through the Go module
# proxy) at the release pinned in scripts/kube-apiserver-build/go.mod. The binary is cached
# per version, so only the first run on a machine pays for the cold build (3-15 minutes on 2 cores).
#
# Output:  ${KUBEPCI_K8S_CACHE:-$HOME/.cache/kubepci/k8s}/<version>/kube-apiserver
# etcd:    taken from PATH, otherwise installed from Debian's etcd-server (root only).
# Runs unattended (CI): it never reads standard input.
set -euo pipefail

# Keep in step with `require k8s.io/kubernetes` in kube-apiserver-build/go.mod.
K8S_VERSION="v1.36.3"

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
module_dir="${script_dir}/kube-apiserver-build"
cache_root="${KUBEPCI_K8S_CACHE:-${HOME}/.cache/kubepci/k8s}"
out_dir="${cache_root}/${K8S_VERSION}"
out_bin="${out_dir}/kube-apiserver"

log() { printf 'build-kube-apiserver: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

ensure_etcd() {
  if command -v etcd >/dev/null 2>&1; then
    return 0
  fi
  if [[ "$(id -u)" -ne 0 ]]; then
    die "etcd is not on PATH and this is not root; install Debian's etcd-server (apt-get install etcd-server) or put etcd on PATH"
  fi
  log "etcd not found; installing Debian's etcd-server"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends etcd-server </dev/null; then
    log "install failed; refreshing the package lists and retrying"
    apt-get update </dev/null
    apt-get install -y --no-install-recommends etcd-server </dev/null
  fi
  command -v etcd >/dev/null 2>&1 || die "etcd-server installed but etcd is still not on PATH"
}

build_apiserver() {
  if [[ -x "${out_bin}" ]]; then
    log "kube-apiserver ${K8S_VERSION} already built"
    return 0
  fi
  command -v go >/dev/null 2>&1 || die "go is not on PATH (Go 1.26.x is needed)"
  local go_version
  go_version="$(go env GOVERSION)"
  case "${go_version}" in
    go1.26|go1.26.*) ;;
    *)
      # Go 1.27 turns on the json v2 experiment, which breaks the apiserver's OpenAPI handler.
      die "Go 1.26.x is required to build kube-apiserver ${K8S_VERSION}, found ${go_version}"
      ;;
  esac
  # go.mod must pin the same release, and the staging modules at the matching v0.X.Y.
  local staging="v0.${K8S_VERSION#v1.}"
  grep -qE "^(require)?[[:space:]]*k8s\.io/kubernetes ${K8S_VERSION}\$" "${module_dir}/go.mod" \
    || die "${module_dir}/go.mod does not require k8s.io/kubernetes ${K8S_VERSION}"
  grep -qE "^[[:space:]]*k8s\.io/component-base => k8s\.io/component-base ${staging}\$" "${module_dir}/go.mod" \
    || die "${module_dir}/go.mod does not replace the k8s.io staging modules with ${staging}"

  local minor="${K8S_VERSION#v}"
  local major="${minor%%.*}"
  minor="${minor#*.}"
  minor="${minor%%.*}"
  local pkg="k8s.io/component-base/version"
  local ldflags="-s -w -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=${major}"
  ldflags+=" -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean"

  mkdir -p "${out_dir}"
  # Build into a temp name and rename, so an interrupted build never leaves a bad cache entry.
  local tmp_bin="${out_bin}.tmp.$$"
  trap 'rm -f "${tmp_bin}"' EXIT
  log "building kube-apiserver ${K8S_VERSION} with ${go_version} (a cold build takes 3-15 min on 2 cores)"
  local start=${SECONDS}
  (
    cd "${module_dir}"
    GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN=local \
      go build -trimpath -ldflags "${ldflags}" -o "${tmp_bin}" . </dev/null
  )
  mv -f "${tmp_bin}" "${out_bin}"
  trap - EXIT
  log "built in $((SECONDS - start)) s"
}

build_apiserver
ensure_etcd
printf 'kube-apiserver: %s\n' "${out_bin}"
printf 'etcd: %s\n' "$(command -v etcd)"
