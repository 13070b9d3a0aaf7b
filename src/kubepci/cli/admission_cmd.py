"""``kubepci admission``: run the validating webhook (``serve``) and generate its manifests (``install``).

The group object is :data:`admission`; other admission commands (``export-vap``) attach to it.
Heavy imports (uvicorn, prometheus-client, cryptography) happen inside the commands.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from kubepci.errors import KubepciError

__all__ = ["admission"]


def _fail(exc: KubepciError) -> None:
    click.echo(f"error: {exc.diagnostics()}", err=True)
    sys.exit(exc.exit_code)


@click.group()
def admission() -> None:
    """The admission webhook: the same checks as `kubepci scan`, enforced when objects are created."""


@admission.command()
@click.option("-c", "--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="kubepci.yaml (scope, overrides, waivers, admission settings).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--client-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Require client certificates signed by this CA (the apiserver's admission client cert).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (the pod IP in a cluster).")
@click.option("--port", default=8443, show_default=True, type=click.IntRange(1, 65535))
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Where the snapshot cache reads namespaces, policies and nodes from.")
@click.option("--context", default=None, help="kubeconfig context.")
@click.option("--in-cluster", is_flag=True, help="Use the pod's ServiceAccount instead of a kubeconfig.")
@click.option("--max-body-bytes", default=4 * 1024 * 1024, show_default=True, type=click.IntRange(1024))
@click.option("--sync-timeout", default=60.0, show_default=True,
              help="Warn when the first cache sync takes longer than this many seconds.")
@click.option("--trail-store", envvar="KUBEPCI_TRAIL_STORE",
              help="Append every decision to this audit trail (default: trail.store from the config file).")
def serve(config_path: Path | None, tls_cert: Path, tls_key: Path, client_ca: Path | None, host: str, port: int,
          kubeconfig: Path | None, context: str | None, in_cluster: bool, max_body_bytes: int,
          sync_timeout: float, trail_store: str | None) -> None:
    """Serve POST /validate, /healthz, /readyz and /metrics over HTTPS."""
    from kubepci.admission.cache import SnapshotCache
    from kubepci.admission.decide import Policy
    from kubepci.admission.kubesource import KubeListWatch
    from kubepci.admission.server import AdmissionApp, ServerSettings, WebhookServer
    from kubepci.checks import default_catalog
    from kubepci.config import Config, load_config
    from kubepci.kube import KubeClient
    from kubepci.waivers import load_waivers

    decision_log = logging.getLogger("kubepci.admission.decision")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    decision_log.addHandler(handler)
    decision_log.setLevel(logging.INFO)
    decision_log.propagate = False
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = load_config(config_path) if config_path else Config()
        waivers = load_waivers(config.waivers_path) if config.waivers_path else ()
        client = KubeClient.in_cluster() if in_cluster else KubeClient.from_kubeconfig(kubeconfig, context)
    except KubepciError as exc:
        _fail(exc)
        return
    committer = None
    recorder = None
    store_url = trail_store or config.trail_store
    if store_url:
        try:
            committer, recorder = _trail_recorder(store_url, config.trail_key)
        except Exception as exc:  # the store could not be opened: say so and do not serve without the trail
            click.echo(f"error: audit trail {store_url.split('@')[-1]}: {exc}", err=True)
            sys.exit(2)
    cache = SnapshotCache(KubeListWatch(client), config)
    cache.start()
    app = AdmissionApp(Policy(default_catalog(), config, tuple(waivers)), cache, max_body_bytes=max_body_bytes,
                       cache_stats=cache.stats, on_decision=recorder)
    server = WebhookServer(app, ServerSettings(tls_cert, tls_key, host=host, port=port, client_ca_file=client_ca))

    def check_sync() -> None:  # serving starts at once: /healthz must answer while the cache syncs
        if not cache.wait_ready(sync_timeout):
            logging.getLogger("kubepci.admission").warning(
                "snapshot cache not synced after %.0fs; /readyz stays 503 until it is", sync_timeout)

    threading.Thread(target=check_sync, name="kubepci-sync-watchdog", daemon=True).start()
    try:
        server.run()
    finally:
        cache.stop()
        if committer is not None:
            committer.stop()  # what was queued is committed (and a checkpoint signed) before exit


def _trail_recorder(store_url: str, key_path: Path | None) -> tuple[Any, Callable[[Mapping[str, Any]], None]]:
    """A group committer on the trail store and the decision hook feeding it."""
    from kubepci.auditlog.committer import GroupCommitter
    from kubepci.auditlog.events import DecisionRecorder
    from kubepci.auditlog.store import open_store
    from kubepci.auditlog.trail import load_signer

    signer = load_signer(key_path) if key_path is not None else None
    committer = GroupCommitter(lambda: open_store(store_url), signer=signer)
    committer.start()
    log = logging.getLogger("kubepci.admission")

    def failed(decision_id: str, exc: BaseException) -> None:
        log.error("decision %s was not appended to the audit trail: %s: %s", decision_id, type(exc).__name__, exc)

    return committer, DecisionRecorder(committer, on_error=failed)


@admission.command()
@click.option("-c", "--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="kubepci.yaml; shipped to the webhook in a ConfigMap (with its waivers file).")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write one file per component here; without it, print everything to stdout.")
@click.option("--image", default=None, help="Webhook image pinned by digest (name@sha256:...).")
@click.option("--replicas", default=2, show_default=True, type=click.IntRange(1))
@click.option("--cert-manager", is_flag=True, help="Issue the serving certificate with cert-manager.")
@click.option("--apiserver-cidr", multiple=True,
              help="Where the apiserver connects from (repeatable); default: the private IPv4 ranges.")
@click.option("--certificate-days", default=90, show_default=True, type=click.IntRange(1, 397))
def install(config_path: Path | None, output_dir: Path | None, image: str | None, replicas: int,
            cert_manager: bool, apiserver_cidr: tuple[str, ...], certificate_days: int) -> None:
    """Generate hardened manifests: namespace, RBAC, TLS, Deployment, PDB, Service, NetworkPolicy, webhooks."""
    from kubepci.admission import install as inst
    from kubepci.checks import default_catalog
    from kubepci.config import Config, load_config

    try:
        config = load_config(config_path) if config_path else Config()
        waivers_text = None
        if config.waivers_path is not None:
            waivers_text = config.waivers_path.read_text(encoding="utf-8")
        opts = inst.InstallOptions(
            image=image or inst.PLACEHOLDER_IMAGE, replicas=replicas, cert_manager=cert_manager,
            apiserver_cidrs=apiserver_cidr or inst.DEFAULT_APISERVER_CIDRS,
            config_text=config_path.read_text(encoding="utf-8") if config_path else "{}\n",
            waivers_text=waivers_text, certificate_days=min(certificate_days, config.max_certificate_days),
        )
        opts.validate()
        bundle = None
        if not cert_manager:
            svc, ns = config.admission_service, config.admission_namespace
            bundle = inst.issue_certificates([f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local", f"{svc}.{ns}"],
                                             days=opts.certificate_days)
        files = inst.manifests(config, default_catalog(), opts, bundle)
    except KubepciError as exc:
        _fail(exc)
        return
    except OSError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(3)
    if output_dir is None:
        click.echo(inst.render([o for objs in files.values() for o in objs]), nl=False)
        return
    for path in inst.write_manifests(files, output_dir):
        click.echo(f"wrote {path}", err=True)
    if image is None:
        click.echo("note: the image is a placeholder; pass --image name@sha256:... before applying", err=True)


if __name__ == "__main__":  # pragma: no cover - `python -m kubepci.cli.admission_cmd` before the CLI wiring
    admission()


def _attach_export_vap() -> None:
    from kubepci.cli.admission_vap_cmd import export_vap

    admission.add_command(export_vap)


_attach_export_vap()
