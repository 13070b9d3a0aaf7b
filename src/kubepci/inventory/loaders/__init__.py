"""Loaders turn sources (files, Helm charts, Kustomize dirs, clusters) into resources."""
