#!/usr/bin/env bash
# Install the Debian packages the end-to-end tests run for real (idempotent, root only):
#   postgresql   PostgreSQL 15 server binaries (/usr/lib/postgresql/15/bin); the tests start their own
#                throwaway cluster on 127.0.0.1, the distribution's "main" cluster is never used
#   etcd-server  etcd, which the test kube-apiserver stores its objects in
#   wrk          the load generator of the webhook reliability test (a separate process)
# `apt-get update` costs time and network, so it only runs when a first install attempt fails
# (a fresh machine with empty or stale package lists).
set -euo pipefail

PACKAGES=(postgresql etcd-server wrk)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup-system-packages.sh: must run as root (apt-get install)" >&2
  exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
install() {
  apt-get install -y -q --no-install-recommends "${missing[@]}"
}

if ! install; then
  echo "setup-system-packages.sh: install failed, refreshing package lists and retrying" >&2
  apt-get update -q
  install
fi

if [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then
  echo "setup-system-packages.sh: /usr/lib/postgresql/15/bin/initdb missing after install" >&2
  exit 1
fi
