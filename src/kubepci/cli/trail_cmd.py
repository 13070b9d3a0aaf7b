"""`kubepci trail ...`: the tamper-evident audit trail from the command line.

Thin by design: parse options, call :mod:`kubepci.auditlog.trail`, print. Failures are
``KubepciError`` subclasses that ``kubepci.cli.main`` maps to exit codes (an integrity failure
is exit 4, naming the first bad leaf).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import click

from kubepci.auditlog.checkpoint import NoteError, generate_keypair
from kubepci.auditlog.envelope import normalize_time
from kubepci.auditlog.store import SearchQuery, open_store
from kubepci.auditlog.trail import Trail, load_signer, load_verifiers
from kubepci.errors import UsageError

__all__ = ["trail"]

_STORE = click.option("--store", "store_url", required=True, envvar="KUBEPCI_TRAIL_STORE",
                      help="sqlite:///abs/path.db, sqlite:rel/path.db or postgresql://user@host:port/db")
_KEY = click.option("--key", "key_path", type=click.Path(dir_okay=False, path_type=Path),
                    help="Signing key (skey) written by 'kubepci trail keygen'.")


@contextlib.contextmanager
def _trail(store_url: str, key_path: Path | None = None, *, vkey_path: Path | None = None,
           origin: str | None = None) -> Iterator[Trail]:
    signer = load_signer(key_path) if key_path is not None else None
    verifiers = load_verifiers(vkey_path) if vkey_path is not None else []
    store = open_store(store_url)
    try:
        yield Trail(store, signer, origin, verifiers=verifiers)
    finally:
        store.close()


def _time_option(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    normalized = normalize_time(value)
    if normalized is None and len(value) == 10:  # a bare date means its midnight UTC
        normalized = normalize_time(value + "T00:00:00Z")
    if normalized is None:
        raise UsageError(f"{name}: not an RFC 3339 timestamp or date: {value!r}")
    return normalized


@click.group("trail")
def trail() -> None:
    """Tamper-evident audit trail: Merkle log, signed checkpoints, proofs (PCI DSS 10.2-10.7)."""


@trail.command()
@click.option("--name", required=True,
              help="Log identity, used as the checkpoint origin (e.g. example.com/prod/audit).")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
def keygen(name: str, out_dir: Path) -> None:
    """Create an Ed25519 key pair: trail.skey (mode 0600) and trail.vkey in OUT_DIR."""
    try:
        skey, vkey = generate_keypair(name)
    except NoteError as exc:
        raise UsageError(f"--name: {exc}") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    skey_path, vkey_path = out_dir / "trail.skey", out_dir / "trail.vkey"
    for path in (skey_path, vkey_path):
        if path.exists():
            raise UsageError(f"{path} already exists; refusing to overwrite a key")
    fd = os.open(skey_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)  # whatever the umask
        out.write(skey + "\n")
    vkey_path.write_text(vkey + "\n", encoding="utf-8")
    click.echo(f"wrote {skey_path} (keep secret) and {vkey_path}")
    click.echo(vkey)


@trail.command()
@_STORE
@click.option("--vkey", "vkey_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The log's public key(s), one vkey per line.")
@click.option("--exported", "exported_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Directory of checkpoints exported earlier (the copies that catch a rewrite).")
@click.option("--origin", help="Log identity (default: the first vkey's name).")
@click.option("-o", "--output", "fmt", default="text", type=click.Choice(["text", "json"]))
def verify(store_url: str, vkey_path: Path, exported_dir: Path | None, origin: str | None, fmt: str) -> None:
    """Re-hash every leaf and payload and check all signed checkpoints; exit 4 on any mismatch."""
    with _trail(store_url, vkey_path=vkey_path, origin=origin) as t:
        result = t.verify(exported_dir)
    if fmt == "json":
        click.echo(json.dumps({
            "ok": True, "size": result.size, "root": base64.b64encode(result.root).decode(),
            "payloads_checked": result.payloads_checked, "payloads_pruned": result.payloads_pruned,
            "nodes_checked": result.nodes_checked, "checkpoints_checked": result.checkpoints_checked,
            "exported_checked": result.exported_checked, "latest_checkpoint_size": result.latest_checkpoint_size,
        }, indent=2))
        return
    click.echo(
        f"trail OK: {result.size} leaves, root {base64.b64encode(result.root).decode()}; "
        f"{result.payloads_checked} payloads re-hashed ({result.payloads_pruned} pruned), "
        f"{result.nodes_checked} tree nodes, {result.checkpoints_checked} stored and "
        f"{result.exported_checked} exported checkpoints consistent"
    )
    if result.latest_checkpoint_size is None:
        click.echo("warning: no signed checkpoint yet; nothing anchors this trail", err=True)
    elif result.latest_checkpoint_size < result.size:
        pending = result.size - result.latest_checkpoint_size
        click.echo(f"note: {pending} leaves are not yet under a signed checkpoint", err=True)


@trail.command()
@click.argument("index", type=int)
@_STORE
@_KEY
@click.option("-o", "--output", "output", default="-", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="Write the proof bundle here (default: stdout).")
def prove(index: int, store_url: str, key_path: Path | None, output: Path) -> None:
    """Inclusion proof for leaf INDEX under a signed checkpoint, verifiable with the vkey alone."""
    with _trail(store_url, key_path) as t:
        bundle = t.prove(index)
    text = json.dumps(bundle, indent=2) + "\n"
    if str(output) == "-":
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote proof of leaf {index} in a tree of {bundle['tree_size']} leaves to {output}", err=True)


@trail.group("checkpoint")
def checkpoint_group() -> None:
    """Sign and export tree heads (C2SP tlog-checkpoint notes)."""


@checkpoint_group.command("create")
@_STORE
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Signing key (skey).")
def checkpoint_create(store_url: str, key_path: Path) -> None:
    """Sign the current tree head and store it; print the signed note."""
    with _trail(store_url, key_path) as t:
        note = t.checkpoint()
    click.echo(note, nl=False)


@checkpoint_group.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@_STORE
def checkpoint_export(directory: Path, store_url: str) -> None:
    """Copy every signed checkpoint into DIRECTORY (keep it on other, write-once storage)."""
    with _trail(store_url) as t:
        written = t.export_checkpoints(directory)
    click.echo(f"exported {len(written)} new checkpoint(s) to {directory}")


@trail.command()
@_STORE
@click.option("--user", help="Authenticated user name.")
@click.option("--verb")
@click.option("--resource", help="Resource; 'pods' also matches subresources such as pods/exec.")
@click.option("--namespace")
@click.option("--source-ip")
@click.option("--outcome", type=click.Choice(["success", "failure"]))
@click.option("--kind", help="Record kind (k8s-audit, falco, admission, gap, ...).")
@click.option("--since", help="Event time from (RFC 3339 or YYYY-MM-DD), inclusive.")
@click.option("--until", help="Event time up to (RFC 3339 or YYYY-MM-DD), exclusive.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--after", default=-1, type=int, help="Only leaves after this index (paging).")
@click.option("-o", "--output", "fmt", default="table", type=click.Choice(["table", "json"]))
def search(store_url: str, user: str | None, verb: str | None, resource: str | None, namespace: str | None,
           source_ip: str | None, outcome: str | None, kind: str | None, since: str | None, until: str | None,
           limit: int, after: int, fmt: str) -> None:
    """Find leaves by who, what, where, outcome and when."""
    query = SearchQuery(
        user=user, verb=verb, resource=resource, namespace=namespace, source_ip=source_ip,
        outcome="success" if outcome == "success" else "failure" if outcome == "failure" else None,
        kind=kind, since=_time_option(since, "--since"), until=_time_option(until, "--until"),
        after=after, limit=limit,
    )
    with _trail(store_url) as t:
        hits = t.search(query)
    if fmt == "json":
        click.echo(json.dumps(hits, indent=2))
        return
    _print_table(hits)


def _print_table(hits: Sequence[dict[str, object]]) -> None:
    from rich.table import Table

    from kubepci.cli.main import stdout_console

    table = Table(title=f"{len(hits)} matching leaves", title_justify="left")
    for column in ("Leaf", "Time", "Kind", "User", "Verb", "Resource", "Namespace/Name", "Code", "Source IP"):
        table.add_column(column)
    for hit in hits:
        fields = hit.get("index")
        idx: dict[str, object] = dict(fields) if isinstance(fields, dict) else {}
        target = "/".join(str(v) for v in (idx.get("namespace"), idx.get("name")) if v)
        table.add_row(
            str(hit.get("leaf_index")), str(idx.get("event_time") or hit.get("received_at")), str(hit.get("kind")),
            str(idx.get("user") or ""), str(idx.get("verb") or ""), str(idx.get("resource") or ""),
            target, str(idx.get("code") or ""), str(idx.get("source_ip") or ""),
        )
    stdout_console().print(table)


@trail.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@_STORE
@_KEY
@click.option("--source", help="Source name recorded in each envelope (default: apiserver, or falco).")
@click.option("--kind", default="auto", type=click.Choice(["auto", "k8s-audit", "falco"]))
def import_(files: Sequence[Path], store_url: str, key_path: Path | None, source: str | None, kind: str) -> None:
    """Append audit log files (JSON lines; rotated and .gz files too), then sign a checkpoint."""
    with _trail(store_url, key_path) as t:
        result = t.import_files(list(files), source=source, kind=kind)
        for line in result.malformed:
            click.echo(f"skipped {line}", err=True)
        click.echo(f"imported {result.appended} new leaves from {len(result.files)} file(s); "
                   f"{result.duplicates} already stored, {len(result.malformed)} malformed line(s) skipped")
        if t.signer is not None:
            note = t.checkpoint()
            click.echo(note.splitlines()[1] + " leaves under a new signed checkpoint")


@trail.command()
@_STORE
@click.option("--retention-days", required=True, type=int, help="Keep raw payloads this long (at least 365).")
@click.option("--now", "now_text", help="Reference time (RFC 3339), default: now.")
def prune(store_url: str, retention_days: int, now_text: str | None) -> None:
    """Drop raw payloads past retention; envelopes, hashes and proofs stay verifiable."""
    now = None
    if now_text is not None:
        normalized = _time_option(now_text, "--now")
        now = dt.datetime.fromisoformat((normalized or "").replace("Z", "+00:00"))
    with _trail(store_url) as t:
        dropped = t.prune(retention_days, now)
    click.echo(f"pruned {dropped} raw payload(s) older than {retention_days} days")


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen: want HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


@trail.command()
@click.option("--store", "store_url", envvar="KUBEPCI_TRAIL_STORE",
              help="Trail store URL (default: trail.store from the config file).")
@_KEY
@click.option("--cert", "cert_file", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="TLS serving certificate (PEM, may include the chain).")
@click.option("--key-file", "tls_key_file", required=True,
              type=click.Path(dir_okay=False, exists=True, path_type=Path), help="TLS private key (PEM).")
@click.option("--client-ca", "client_ca", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="CA for client certificates (mTLS); senders without a token must present one it signed.")
@click.option("--sources", "sources_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="YAML list of senders: name, endpoint, client_names and/or token, silence threshold.")
@click.option("--listen", default="127.0.0.1:8443", show_default=True, help="HOST:PORT to bind.")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="kubepci.yaml: trail.store, trail.key and the CDE namespaces for the review rules.")
@click.option("--checkpoint-every", default=10_000, show_default=True, type=click.IntRange(1),
              help="Sign a checkpoint after this many new leaves ...")
@click.option("--checkpoint-seconds", default=60.0, show_default=True, type=click.FloatRange(0.1),
              help="... or after this many seconds, whichever comes first.")
@click.option("--tick-seconds", default=10.0, show_default=True, type=click.FloatRange(0.05),
              help="How often silence checks run (gaps, missing Falco heartbeats).")
@click.option("--max-body-bytes", default=16 * 1024 * 1024, show_default=True, type=click.IntRange(1024))
def serve(store_url: str | None, key_path: Path | None, cert_file: Path, tls_key_file: Path, client_ca: Path | None,
          sources_file: Path | None, listen: str, config_path: Path | None, checkpoint_every: int,
          checkpoint_seconds: float, tick_seconds: float, max_body_bytes: int) -> None:
    """HTTPS ingestion: API-server audit webhook and Falco alerts in, 200 only once durable."""
    import logging

    from kubepci.auditlog.ingest import Ingestor
    from kubepci.auditlog.rules import ReviewContext, Reviewer
    from kubepci.auditlog.server import IngestServer, IngestSettings
    from kubepci.auditlog.sources import default_sources, load_sources
    from kubepci.config import load_config

    config = load_config(config_path) if config_path is not None else None
    url = store_url or (config.trail_store if config else None)
    if not url:
        raise UsageError("no trail store: give --store or trail.store in the config file")
    signing_key = key_path or (config.trail_key if config else None)
    signer = load_signer(signing_key) if signing_key is not None else None
    if sources_file is not None:
        sources = load_sources(sources_file)
    elif client_ca is not None:
        sources = default_sources()
    else:
        raise UsageError("nobody could deliver: give --client-ca (mTLS) and/or --sources with tokens")
    host, port = _listen(listen)
    review = ReviewContext(cde_namespaces=frozenset(config.cde.namespaces) if config else frozenset())
    settings = IngestSettings(
        cert_file=cert_file, key_file=tls_key_file, client_ca_file=client_ca, host=host, port=port,
        max_body_bytes=max_body_bytes, checkpoint_every=checkpoint_every, checkpoint_seconds=checkpoint_seconds,
        tick_seconds=tick_seconds,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        server = IngestServer(lambda: open_store(url), settings, sources, signer=signer,
                              ingestor=Ingestor(Reviewer(review)), append_worker_url=url)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if signer is None:
        click.echo("warning: no signing key (--key): no checkpoints will be signed", err=True)
    click.echo(f"kubepci trail serving https://{host}:{port} into {url.split('@')[-1]}", err=True)
    server.run()
