"""Go durations, DNS wildcard matching and image-reference parsing used by the TLS and image checks."""

from __future__ import annotations

import pytest

from kubepci.checks._tls import fmt_days, host_matches, parse_go_duration
from kubepci.checks.images import parse_image, registry_allowed


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2160h", 2160 * 3600.0), ("1h30m", 5400.0), ("1.5h", 5400.0), ("90m", 5400.0), ("500ms", 0.5),
     ("0", 0.0), ("-1h", -3600.0), (" 720h ", 720 * 3600.0), ("2159h59m60s", 2160 * 3600.0)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["90d", "1y", "h", "", "10", "1h 30m", None, 2160])
def test_invalid_go_durations(text: object) -> None:
    assert parse_go_duration(text) is None


def test_fmt_days() -> None:
    assert fmt_days(90 * 86400.0) == "90"
    assert fmt_days(36 * 3600.0) == "1.5"


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [("shop.example.com", "SHOP.example.com.", True), ("*.example.com", "a.example.com", True),
     ("a.example.com", "*.example.com", True), ("*.example.com", "a.b.example.com", False),
     ("*.example.com", "example.com", False), ("shop.example.com", "shop.example.org", False)],
)
def test_host_matches(pattern: str, host: str, expected: bool) -> None:
    assert host_matches(pattern, host) is expected


@pytest.mark.parametrize(
    ("image", "repository", "tag", "digest"),
    [
        ("nginx", "docker.io/library/nginx", "", ""),
        ("nginx:1.27", "docker.io/library/nginx", "1.27", ""),
        ("bitnami/redis:7", "docker.io/bitnami/redis", "7", ""),
        ("index.docker.io/library/redis:7", "docker.io/library/redis", "7", ""),
        ("localhost:5000/tools", "localhost:5000/tools", "", ""),
        ("Registry.Example.com:5000/a/b:1.0@sha256:ab", "registry.example.com:5000/a/b", "1.0", "sha256:ab"),
        ("ghcr.io/acme/app@sha256:cd", "ghcr.io/acme/app", "", "sha256:cd"),
    ],
)
def test_parse_image(image: str, repository: str, tag: str, digest: str) -> None:
    ref = parse_image(image)
    assert (ref.repository, ref.tag, ref.digest) == (repository, tag, digest)


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        ("harbor.example.com/p/api:1", True),
        ("quay.io/harbor.example.com/x:1", False),
        ("harbor.example.com.evil.io/p/api:1", False),
        ("harbor.example.com:8443/p/api:1", False),
        ("nginx:1", True),
        ("docker.io/bitnami/redis:7", False),
        ("registry.k8s.io/ingress-nginx/controller:v1", True),
        ("registry.k8s.io/ingress-nginx-evil/x:1", False),
    ],
)
def test_registry_prefixes_are_path_prefixes(image: str, allowed: bool) -> None:
    prefixes = ("harbor.example.com/", "docker.io/library", "registry.k8s.io/ingress-nginx")
    assert registry_allowed(image, prefixes) is allowed
