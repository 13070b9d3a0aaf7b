#!/usr/bin/env bash
# Create (or reuse) the isolated virtualenv holding network-config-analyzer (NCA), the live
# differential oracle used by tests/oracle_nca. NCA pins its dependencies exactly (PyYAML, networkx,
# lxml, ...), so it must never share kubepci's own venv. Idempotent: a venv that already has the
# pinned version is left untouched. CI calls this before running pytest.
set -euo pipefail

NCA_VERSION="2.1.0"
VENV="${KUBEPCI_ORACLE_VENV:-${HOME}/.cache/kubepci/nca-venv}"
PYTHON="${PYTHON:-python3}"

installed_version() {
    "${VENV}/bin/python" - <<'PY' 2>/dev/null || true
from importlib.metadata import PackageNotFoundError, version
try:
    print(version("network-config-analyzer"))
except PackageNotFoundError:
    pass
PY
}

if [[ -x "${VENV}/bin/nca" && "$(installed_version)" == "${NCA_VERSION}" ]]; then
    echo "setup-nca-oracle: network-config-analyzer ${NCA_VERSION} already present in ${VENV}"
    exit 0
fi

mkdir -p "$(dirname "${VENV}")"
if [[ ! -x "${VENV}/bin/python" ]]; then
    "${PYTHON}" -m venv "${VENV}"
fi
"${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check \
    "network-config-analyzer==${NCA_VERSION}"

got="$(installed_version)"
if [[ "${got}" != "${NCA_VERSION}" || ! -x "${VENV}/bin/nca" ]]; then
    echo "setup-nca-oracle: installation failed (found version '${got}')" >&2
    exit 1
fi
echo "setup-nca-oracle: network-config-analyzer ${NCA_VERSION} installed in ${VENV}"
