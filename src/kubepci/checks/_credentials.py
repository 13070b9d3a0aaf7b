"""Credential heuristics shared by the secrets checks: which key names and values look sensitive.

Key names are split into lower-case tokens (``dbPassword`` -> ``db password``,
``GF_SECURITY_ADMIN_PASSWORD`` -> ``gf security admin password``) so a rule can ask about words
instead of raw substrings; that keeps ``AUTHOR`` or ``OAUTH_CLIENT_ID`` from looking like ``auth``.
A name whose last word says it only *describes* a secret (``PASSWORD_FILE``, ``TOKEN_URL``,
``SECRET_NAME``) is not a credential: pointing at a mounted file is exactly what we recommend.

Nothing here ever returns or formats a value; callers get only "which kind of credential" so a
finding can say what it saw without repeating it. The key classifiers are pure functions of the
name and memoised: clusters repeat the same env and ConfigMap key names thousands of times.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import functools
import re
from collections.abc import Iterable
from importlib import resources

__all__ = [
    "WELL_KNOWN_PASSWORD_VARS",
    "credential_kind",
    "decode_base64_text",
    "default_passwords",
    "is_env_reference",
    "is_flag_value",
    "is_ignored",
    "is_password_key",
    "is_sensitive_key",
    "key_path",
    "key_tokens",
]

_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_REFERENCE = re.compile(r"^\s*(?:\$\([A-Za-z_][A-Za-z0-9_]*\)\s*)+$")

#: substrings of the joined tokens that mark a credential on their own
_SENSITIVE_PARTS = (
    "password", "passwd", "passphrase", "secret", "credential", "apikey", "privatekey", "accesskey",
    "secretkey", "accountkey", "masterkey", "encryptionkey", "signingkey", "keystore",
)
#: whole tokens that mark a credential (too short to trust as substrings); weak evidence, so a
#: file-like key (``basic_auth.ini``) needs one of the parts above instead
_SENSITIVE_TOKENS = frozenset({"pwd", "pass", "token", "tokens", "auth", "creds", "jwt", "bearer", "dsn"})
_SENSITIVE_PARTS_RE = re.compile("|".join(_SENSITIVE_PARTS))
_FILE_LIKE = re.compile(
    r"\.(?:sh|bash|py|rb|js|ini|conf|cfg|cnf|toml|ya?ml|json|xml|properties|txt|env|sql|lua|tpl|j2)$", re.IGNORECASE
)
#: vendor variable names that hold a credential without any of the words above
_SENSITIVE_NAMES = frozenset({
    "azure_batch_key", "oci_cli_key_content", "azure_storage_key", "neo4j_auth", "minio_access_key",
    "minio_secret_key", "sendgrid_key", "stripe_key", "mailgun_key",
})
#: last words that make a name describe a secret rather than hold one
_DESCRIPTIVE_LAST = frozenset({
    "file", "files", "path", "dir", "url", "uri", "host", "hostname", "port", "enabled", "enable",
    "disabled", "required", "type", "mode", "method", "name", "names", "user", "username", "length",
    "len", "expiry", "expiration", "ttl", "timeout", "lifetime", "endpoint", "header", "policy",
    "provider", "ref", "location", "mount", "version", "format", "algorithm", "issuer", "audience",
    "field", "env", "count", "size", "prefix", "duration", "interval", "store", "cmd", "command", "ip",
    "ips", "cidr", "cidrs", "seconds", "minutes", "hours", "days",
})
#: words that make a name a quantity, e.g. MAX_TOKENS for an LLM client, CASSANDRA_NUM_TOKENS
_QUANTITY = frozenset({"max", "min", "num"})
#: names that look sensitive but hold a path, an identifier or a mode by convention
_NOT_SENSITIVE_NAMES = frozenset({
    "google_application_credentials", "aws_access_key_id", "access_key_id",
    "etcd_auth_token",  # the token *type* (simple | jwt,...)
    "etcd_initial_cluster_token",  # a cluster id that keeps clusters apart, not an authenticator
})
#: values that make a variable a switch (ALLOW_EMPTY_PASSWORD=yes), never a credential
_FLAG_VALUES = frozenset({"true", "false", "yes", "no", "on", "off", "0", "1", "enabled", "disabled", "none"})

_PASSWORD_PARTS = ("password", "passwd", "passphrase")
_PASSWORD_TOKENS = frozenset({"pwd", "pass"})

#: well-known image variables whose value is a password even though the name may not say so
WELL_KNOWN_PASSWORD_VARS = frozenset({
    "GF_SECURITY_ADMIN_PASSWORD", "POSTGRES_PASSWORD", "POSTGRESQL_PASSWORD", "PGPASSWORD",
    "MYSQL_ROOT_PASSWORD", "MYSQL_PASSWORD", "MARIADB_ROOT_PASSWORD", "MARIADB_PASSWORD",
    "RABBITMQ_DEFAULT_PASS", "RABBITMQ_PASSWORD", "MONGO_INITDB_ROOT_PASSWORD", "MONGODB_ROOT_PASSWORD",
    "REDIS_PASSWORD", "ELASTIC_PASSWORD", "KEYCLOAK_ADMIN_PASSWORD", "KC_BOOTSTRAP_ADMIN_PASSWORD",
    "MINIO_ROOT_PASSWORD", "MINIO_SECRET_KEY", "MINIO_ACCESS_KEY", "NEO4J_AUTH", "JENKINS_ADMIN_PASSWORD",
    "DOCKER_INFLUXDB_INIT_PASSWORD", "INFLUXDB_ADMIN_PASSWORD", "HARBOR_ADMIN_PASSWORD",
    "SA_PASSWORD", "MSSQL_SA_PASSWORD", "ORACLE_PASSWORD", "ORACLE_PWD", "CASSANDRA_PASSWORD",
    "COUCHDB_PASSWORD", "ARANGO_ROOT_PASSWORD", "NEXUS_ADMIN_PASSWORD", "SONARQUBE_JDBC_PASSWORD",
    "AIRFLOW_ADMIN_PASSWORD", "_AIRFLOW_WWW_USER_PASSWORD", "WORDPRESS_DB_PASSWORD", "DB_PASSWORD",
    "ADMIN_PASSWORD", "ROOT_PASSWORD",
})

# (literals one of which must occur, pattern, what it is): the substring test is C-speed and skips
# the regex for almost every value, which matters for megabyte-sized ConfigMaps (dashboards)
_VALUE_PATTERNS: tuple[tuple[tuple[str, ...], re.Pattern[str], str], ...] = (
    (("PRIVATE KEY",), re.compile(r"-{3,}\s*BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY"), "a PEM private key"),
    (("eyJ",), re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\."), "a JSON Web Token"),
    (("AKIA", "ASIA"), re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])"), "an AWS access key id"),
    (("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
     re.compile(r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"), "a GitHub token"),
    (("xox",), re.compile(r"(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,}"), "a Slack token"),
    (("://",), re.compile(r"://[^\s/:@]+:(?![$%{<])[^\s/@]+@[^\s/@]"), "a URL with an embedded password"),
)


def key_tokens(name: str) -> tuple[str, ...]:
    """Lower-case words of a key name, splitting camelCase and any punctuation."""
    return tuple(t for t in _NON_ALNUM.split(_CAMEL.sub(r"\1_\2", name).lower()) if t)


def _descriptive(tokens: tuple[str, ...]) -> bool:
    if tokens[-1] in _DESCRIPTIVE_LAST or not _QUANTITY.isdisjoint(tokens):
        return True
    return len(tokens) >= 2 and tokens[-2:] == ("key", "id")


@functools.lru_cache(maxsize=16384)
def is_sensitive_key(name: str) -> bool:
    """Does the key name say it holds a credential (password, token, API key, private key, ...)?

    A file-like key (``create_auth_db.sh``) needs a strong word such as password or secret; the
    short tokens (auth, token, pass) alone are too common in file names.
    """
    tokens = key_tokens(name)
    if not tokens:
        return False
    snake = "_".join(tokens)
    if snake in _SENSITIVE_NAMES:
        return True
    if snake in _NOT_SENSITIVE_NAMES or _descriptive(tokens):
        return False
    if _SENSITIVE_PARTS_RE.search("".join(tokens)):
        return True
    return not _FILE_LIKE.search(name) and any(t in _SENSITIVE_TOKENS for t in tokens)


def is_flag_value(value: str) -> bool:
    """``yes``/``false``/``1``...: the variable switches a feature, it does not hold a secret."""
    return value.strip().lower() in _FLAG_VALUES


@functools.lru_cache(maxsize=16384)
def is_password_key(name: str) -> bool:
    """Narrower than :func:`is_sensitive_key`: the value is a password (or a well-known one)."""
    if name.upper() in WELL_KNOWN_PASSWORD_VARS:
        return True
    tokens = key_tokens(name)
    if not tokens or _descriptive(tokens):
        return False
    joined = "".join(tokens)
    return any(part in joined for part in _PASSWORD_PARTS) or any(t in _PASSWORD_TOKENS for t in tokens)


def credential_kind(value: str) -> str | None:
    """Name the kind of credential ``value`` looks like (never the value itself), or None."""
    if len(value) < 8:
        return None
    for literals, pattern, kind in _VALUE_PATTERNS:
        if any(lit in value for lit in literals) and pattern.search(value):
            return kind
    return None


def is_env_reference(value: str) -> bool:
    """``$(OTHER_VAR)`` is Kubernetes dependent-variable expansion, not a literal."""
    return _ENV_REFERENCE.match(value) is not None


def is_ignored(name: str, patterns: Iterable[str]) -> bool:
    """Config ``credentials.ignore_keys``: case-insensitive names or shell-style globs."""
    lowered = name.lower()
    return any(fnmatch.fnmatchcase(lowered, p.lower()) for p in patterns)


def decode_base64_text(raw: object) -> str | None:
    """Secret ``data``/ConfigMap ``binaryData`` value as text, or None if it is not base64 UTF-8."""
    if not isinstance(raw, str):
        return None
    try:
        return base64.b64decode("".join(raw.split()), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None


def key_path(prefix: str, key: str) -> str:
    """``data.password`` for plain keys, ``data['tls.crt']`` when the key has dots or slashes."""
    return f"{prefix}.{key}" if _PLAIN_KEY.match(key) else f"{prefix}['{key}']"


@functools.cache
def default_passwords() -> frozenset[str]:
    """The curated vendor-default list shipped in ``kubepci/data/default_passwords.txt``, read once."""
    text = resources.files("kubepci").joinpath("data/default_passwords.txt").read_text(encoding="utf-8")
    entries = (line.strip() for line in text.splitlines())
    return frozenset(e for e in entries if e and not e.startswith("#"))
