"""`python -m watcher ...`: every trigger and developer command, all on the one reconcile code path.

Exit codes: 0 done (per-model failures are recorded as tags, not exit codes); 1 the pass could not
run (registry or cluster unreachable) or the named model failed; 2 bad usage or settings.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from model_wrapper.contract.secret_files import aws_credential_values
from watcher.config.logs import configure_logging, register_secrets
from watcher.config.settings import Settings, load_settings
from watcher.errors import PassAborted, ServiceBuilderError, SettingsInvalid

if TYPE_CHECKING:
    from watcher.reconcile.deps import Deps

log = logging.getLogger("watcher")
# Bounded MLflow retries: a failing call must not stall the pass for minutes (users may override).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m watcher", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)
    run_once = commands.add_parser("run-once", help="one reconcile pass (what the CronJob runs)")
    run_once.add_argument("--dry-run", action="store_true", help="print the plan and manifests, write nothing")
    run_once.add_argument("--model", help="reconcile only this registered model")
    watch = commands.add_parser("watch", help="reconcile every POLL_INTERVAL_SECONDS until SIGTERM")
    watch.add_argument("--once", action="store_true", help="one pass, then exit")
    watch.add_argument("--dry-run", action="store_true")
    render = commands.add_parser("render", help="print the validated manifests for one version")
    render.add_argument("name")
    render.add_argument("version", type=int)
    deploy = commands.add_parser("deploy", help="deploy one version now (the next pass follows the selector)")
    deploy.add_argument("name")
    deploy.add_argument("version", type=int)
    deploy.add_argument("--target", choices=["kubernetes", "local"], help="overrides DEPLOY_TARGET")
    undeploy = commands.add_parser("undeploy", help="remove a model's objects and tag its version undeployed "
                                                    "(refused while the selector still picks a version of it)")
    undeploy.add_argument("name")
    undeploy.add_argument("--untag", action="store_true",
                          help="also remove the tag, alias or stage that selects it, so it stays undeployed")
    undeploy.add_argument("--target", choices=["kubernetes", "local"])
    retry = commands.add_parser("retry", help="forget a remembered failure and reconcile the model now")
    retry.add_argument("name")
    retry.add_argument("version", type=int, nargs="?", help="default: every failed version of the model")
    retry.add_argument("--target", choices=["kubernetes", "local"])
    status = commands.add_parser("status", help="every selected or running version, its status and message")
    status.add_argument("--json", action="store_true", help="the same as JSON, for scripts")
    status.add_argument("--target", choices=["kubernetes", "local"])
    for name, text in (("promote", "promote the model's candidate now, on its figures so far"),
                       ("abort", "roll the model's candidate back now; the live version keeps serving")):
        decide = commands.add_parser(name, help=text)
        decide.add_argument("name")
        decide.add_argument("--target", choices=["kubernetes", "local"])
    drift = commands.add_parser("drift", help="measure live inputs against the version's reference data")
    drift.add_argument("name")
    drift.add_argument("version", type=int, nargs="?", help="default: the deployed version")
    drift.add_argument("--since", default="24h", help="the window's length, e.g. 90m, 24h, 7d (default 24h)")
    drift.add_argument("--until", help="the window's end, ISO 8601 (default: now); the same window gives the "
                                       "same figures")
    commands.add_parser("serve-webhooks", help="receive MLflow registry webhooks and reconcile at once")
    register = commands.add_parser("register-webhook", help="create or update the MLflow webhook")
    register.add_argument("url")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        overrides = {"deploy_target": args.target} if getattr(args, "target", None) else {}
        settings = prepared_settings(**overrides)
    except SettingsInvalid as e:
        configure_logging()
        log.error("%s", e)
        return 2
    configure_logging(settings.log_format)
    try:
        return _dispatch(args, settings)
    except PassAborted as e:
        log.error("pass aborted: %s" if args.command in ("run-once", "watch") else "%s", e)
        return 1
    except ServiceBuilderError as e:
        log.error("%s", e)
        return 1


def prepared_settings(**overrides: object) -> Settings:
    """The environment's settings (with `overrides`), their secrets registered so no log line shows them."""
    settings = load_settings(**overrides)
    register_secrets([*(s.get_secret_value() for s in (settings.aws_secret_access_key, settings.aws_access_key_id,
                                                        settings.k8s_api_key, settings.webhook_secret) if s),
                      *aws_credential_values()])
    return settings


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from watcher.entry import commands

    if args.command == "run-once":
        return _run_once(settings, dry_run=args.dry_run, only_model=args.model)
    if args.command == "watch":
        from watcher.entry.loop import run_watch

        return run_watch(settings, build_deps, once=args.once, dry_run=args.dry_run)
    if args.command == "render":
        return commands.render(build_deps(settings), args.name, args.version)
    if args.command == "deploy":
        return commands.deploy(build_deps(settings), args.name, args.version)
    if args.command == "undeploy":
        return commands.undeploy(build_deps(settings), args.name, untag=args.untag)
    if args.command == "retry":
        return commands.retry(build_deps(settings), args.name, args.version)
    if args.command == "status":
        return commands.status(build_deps(settings), as_json=args.json)
    if args.command in ("promote", "abort"):
        return commands.decide_rollout(build_deps(settings), args.name, args.command)
    if args.command == "drift":
        return commands.drift(build_deps(settings), args.name, args.version, since=args.since, until=args.until)
    if args.command == "serve-webhooks":
        from watcher.entry.webhooks import serve

        return serve(settings, build_deps)
    if args.command == "register-webhook":
        from watcher.entry.webhooks import register

        return register(settings, args.url)
    raise AssertionError(args.command)


def _run_once(settings: Settings, *, dry_run: bool, only_model: str | None) -> int:
    """The CronJob's pass. SIGTERM (activeDeadlineSeconds, a drain, an eviction) stops it as it stops `watch`:
    no write is cut in half, a rollout being waited for is rolled back and tagged for retry, the Lease is
    released, and the process exits 1 within seconds."""
    from watcher.entry import commands
    from watcher.entry.loop import Stop
    from watcher.errors import Stopping

    stop = Stop()
    stop.handle_signals()
    try:
        commands.reconcile(build_deps(settings, stop_requested=stop, sleep=stop.sleep), dry_run=dry_run,
                           only_model=only_model)
    except Stopping:
        log.warning("stopped by a signal: the step in progress was rolled back; the next pass redoes it")
        return 1
    finally:
        stop.restore_signals()
    return 1 if stop() else 0


def build_deps(settings: Settings, *, sleep: Callable[[float], None] = time.sleep, **overrides: object) -> Deps:
    """The real collaborators for `settings` (tests pass their own `Deps` instead).

    `sleep` is how the Kubernetes target waits (rollouts, retries); `watch` passes one SIGTERM interrupts.
    """
    from watcher.clients.artifacts import S3Store
    from watcher.clients.registry import Registry
    from watcher.reconcile.deps import Deps
    from watcher.render.manifests import Renderer

    target: object
    if settings.deploy_target == "local":
        from watcher.targets.local import LocalTarget

        target = LocalTarget(settings)
    else:
        from watcher.targets.kubernetes.cluster import KubernetesTarget

        target = KubernetesTarget(settings, sleep=sleep)
    secret = settings.aws_secret_access_key
    key = settings.aws_access_key_id
    parts: dict[str, object] = {
        "settings": settings,
        "registry": Registry(settings.mlflow_tracking_uri, settings.search_page_size),
        "store": S3Store(settings.mlflow_s3_endpoint_url, key.get_secret_value() if key else None,
                         secret.get_secret_value() if secret else None),
        "target": target, "renderer": Renderer(settings), "clock": lambda: datetime.now(UTC),
    }
    parts.update(overrides)
    return Deps(**parts)  # type: ignore[arg-type]

