"""Key-name and value heuristics behind the secrets checks, and the shipped default-password list."""

from __future__ import annotations

import base64

import pytest

from kubepci.checks._credentials import (
    credential_kind,
    decode_base64_text,
    default_passwords,
    is_env_reference,
    is_flag_value,
    is_ignored,
    is_password_key,
    is_sensitive_key,
    key_path,
    key_tokens,
)


def test_key_tokens_split_camel_case_and_punctuation() -> None:
    assert key_tokens("dbPassword") == ("db", "password")
    assert key_tokens("GF_SECURITY_ADMIN_PASSWORD") == ("gf", "security", "admin", "password")
    assert key_tokens("discovery.sendtargets.auth-password") == ("discovery", "sendtargets", "auth", "password")
    assert key_tokens("APIKey") == ("apikey",)


@pytest.mark.parametrize(
    "name",
    ["password", "my_password", "DB_PASSWD", "dbPassword", "PGPASSWORD", "API_KEY", "apiKey", "x-api-key",
     "AWS_SECRET_ACCESS_KEY", "client_secret", "GITHUB_TOKEN", "privateKey", "BASIC_AUTH", "RABBITMQ_DEFAULT_PASS",
     "AZURE_BATCH_KEY", "OCI_CLI_KEY_CONTENT", "credentials.json", "keystore.jks", "DATABASE_DSN", "PASSWORD_HASH"],
)
def test_sensitive_names(name: str) -> None:
    assert is_sensitive_key(name)


@pytest.mark.parametrize(
    "name",
    ["greeting", "user_name", "AUTHOR", "OAUTH_CLIENT_ID", "PASSWORD_FILE", "TOKEN_URL", "SECRET_NAME",
     "PASSWORD_MIN_LENGTH", "MAX_TOKENS", "CASSANDRA_NUM_TOKENS", "AWS_ACCESS_KEY_ID", "GOOGLE_APPLICATION_CREDENTIALS",
     "AIRFLOW__API__SECRET_KEY_CMD", "PARSE_SERVER_MASTER_KEY_IPS", "create_auth_db.sh", "basic_auth_overrides.ini",
     "ETCD_INITIAL_CLUSTER_TOKEN", "tls.key.path", "", "___"],
)
def test_descriptive_or_harmless_names(name: str) -> None:
    assert not is_sensitive_key(name)


def test_password_keys_are_narrower_than_sensitive_keys() -> None:
    assert is_password_key("admin-password")
    assert is_password_key("RABBITMQ_DEFAULT_PASS")
    assert is_password_key("neo4j_auth")  # well-known variable, case-insensitive
    assert is_password_key("MINIO_SECRET_KEY")
    assert not is_password_key("API_TOKEN")
    assert not is_password_key("admin-user")
    assert not is_password_key("PASSWORD_FILE")


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIB", "a PEM private key"),
        ("---BEGIN OPENSSH PRIVATE KEY---\nxxx", "a PEM private key"),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "a JSON Web Token"),
        ("key=AKIAIOSFODNN7EXAMPLE", "an AWS access key id"),
        ("ghp_" + "a1B2" * 9, "a GitHub token"),
        ("xoxb-1234567890-abcdef", "a Slack token"),
        ("postgres://app:s3cret@db:5432/app", "a URL with an embedded password"),
    ],
)
def test_credential_values_are_named_not_shown(value: str, kind: str) -> None:
    assert credential_kind(value) == kind


@pytest.mark.parametrize(
    "value",
    ["-----BEGIN CERTIFICATE-----\nMIIB", "eyJmb28iOiJiYXIifQ==", "AKIA-not-a-key", "https://example.com/path",
     "postgres://app:$(DB_PASSWORD)@db/app", "postgres://app@db/app", "hello world", "short"],
)
def test_values_that_are_not_credentials(value: str) -> None:
    assert credential_kind(value) is None


def test_env_references_flags_and_ignores() -> None:
    assert is_env_reference("$(DB_PASSWORD)")
    assert is_env_reference(" $(A)$(B) ")
    assert not is_env_reference("pre-$(A)")
    assert is_flag_value(" Yes ")
    assert not is_flag_value("hunter2")
    assert is_ignored("stripe_publishable_key", ["STRIPE_PUBLISHABLE_*"])
    assert not is_ignored("STRIPE_SECRET_KEY", ["STRIPE_PUBLISHABLE_*"])


def test_base64_and_paths() -> None:
    assert decode_base64_text(base64.b64encode(b"admin").decode()) == "admin"
    assert decode_base64_text("%%%") is None
    assert decode_base64_text(base64.b64encode(b"\xff\xfe").decode()) is None
    assert decode_base64_text(42) is None
    assert key_path("data", "password") == "data.password"
    assert key_path("data", "tls.crt") == "data['tls.crt']"


def test_default_password_list_is_curated_and_cached() -> None:
    entries = default_passwords()
    assert 60 <= len(entries) <= 120
    assert {"admin", "changeme", "prom-operator", "guest", "root", "postgres", "secret", "123456"} <= entries
    assert not any(e.startswith("#") or e != e.strip() or not e for e in entries)
    assert default_passwords() is entries
