"""Fixtures for end-to-end tests against a real kube-apiserver + etcd on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.k8s import BinariesMissingError, KubeAPIServer, e2e_optional, find_binaries


@pytest.fixture(scope="session")
def kube_apiserver() -> Iterator[KubeAPIServer]:
    """One apiserver for the whole session: a cold start costs seconds and ~300 MB.

    Missing binaries fail the run (CI always builds them) unless KUBEPCI_E2E_OPTIONAL=1,
    which turns that into a skip for developers who have not run the build script.
    """
    try:
        binaries = find_binaries()
    except BinariesMissingError as exc:
        if e2e_optional():
            pytest.skip(str(exc))
        raise
    with KubeAPIServer(binaries=binaries) as server:
        yield server
