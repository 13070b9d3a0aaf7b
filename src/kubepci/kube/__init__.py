"""Talking to a live Kubernetes API server (read-only): see :mod:`kubepci.kube.client`."""

from __future__ import annotations

from kubepci.kube.client import APIResource, KubeAPIError, KubeClient

__all__ = ["APIResource", "KubeAPIError", "KubeClient"]
