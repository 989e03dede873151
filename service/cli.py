"""The ``rtserve`` command: serve, push, ls, rollout, fleet status, demo-model."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service import __version__
from service.errors import ServingError
from service.observability.logs import configure_logging
from service.observability.profile import DEFAULT_BINS
from service.settings import Settings

log = logging.getLogger("rtserve")

EPILOG = """\
environment: every setting is also read from RTSERVE_<NAME> (nested: RTSERVE_S3__ENDPOINT_URL);
command-line options win. S3 credentials come from the standard AWS variables or files.
examples:
  rtserve serve --repository ./models
  rtserve serve --repository s3://models --models iris
  rtserve push ./export/iris --model iris --repository s3://models
  rtserve ls --repository s3://models
  rtserve rollout iris --version 4 --in 60 --repository s3://models
  rtserve fleet status --endpoints 10.0.0.5:8080,10.0.0.6:8080
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtserve",
        description="Real-time TensorFlow model server (TF Serving REST + Open Inference Protocol).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rtserve {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="run the server", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_repository_option(serve)
    serve.add_argument("--host", help="address to listen on (RTSERVE_HOST, default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="HTTP port (RTSERVE_PORT, default 8080)")
    serve.add_argument("--grpc-port", type=int, help="gRPC port, 0 turns gRPC off (RTSERVE_GRPC_PORT, default 8081)")
    serve.add_argument("--models", help="models to serve, comma separated, or '*' (RTSERVE_MODELS, default *)")
    serve.add_argument("--cache-dir", help="where downloaded versions are kept (RTSERVE_CACHE_DIR)")
    serve.add_argument("--poll-interval-s", type=float, help="seconds between repository polls")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="log level")

    push = commands.add_parser("push", help="publish a SavedModel folder as a new version")
    push.add_argument("source", type=Path, metavar="DIR", help="the SavedModel folder (holds saved_model.pb)")
    push.add_argument("--model", required=True, help="model name")
    push.add_argument("--version", type=int, help="version number (default: the next free one)")
    push.add_argument(
        "--profile",
        type=Path,
        metavar="DATA",
        help="training samples (.npy, .npz or .csv) of the default signature's numeric inputs: adds a reference "
        "profile for drift monitoring (assets.extra/rtserve_profile.json)",
    )
    push.add_argument(
        "--profile-bins", type=int, default=DEFAULT_BINS, metavar="N", help=f"bins per feature (default {DEFAULT_BINS})"
    )
    add_repository_option(push)

    listing = commands.add_parser("ls", help="list the repository's models and versions")
    listing.add_argument("--model", help="only this model")
    add_repository_option(listing)

    add_rollout_parser(commands)
    add_fleet_parser(commands)

    demo = commands.add_parser("demo-model", help="train the demo model 'iris' and write it as version 1")
    demo.add_argument("destination", type=Path, metavar="DIR", help="the model folder, e.g. ./models/iris")
    return parser


def add_rollout_parser(commands: Any) -> None:
    rollout = commands.add_parser(
        "rollout",
        help="route a model's default requests to a version (writes serving.json)",
        description="Rewrite the model's serving.json in the repository (labels and canary weight are kept). "
        "With --at or --in every replica switches at that moment by its clock; the version is preloaded first.",
    )
    rollout.add_argument("model", metavar="MODEL", help="model name")
    rollout.add_argument("--version", type=int, required=True, help="the version default requests go to")
    when = rollout.add_mutually_exclusive_group()
    when.add_argument("--at", metavar="TIME", help="switch at this UTC time, ISO 8601, e.g. 2026-11-25T12:00:00Z")
    when.add_argument("--in", dest="in_s", type=float, metavar="SECONDS", help="switch this many seconds from now")
    rollout.add_argument(
        "--label", help="point this label at the version instead (the default follows it if it is the default's label)"
    )
    rollout.add_argument(
        "--canary-weight", type=float, metavar="W", help="share 0..1 of default requests sent to the 'canary' label"
    )
    add_repository_option(rollout)


def add_fleet_parser(commands: Any) -> None:
    fleet = commands.add_parser("fleet", help="the replicas of a deployment")
    actions = fleet.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    status = actions.add_parser(
        "status",
        help="which version every replica serves",
        description="Read every replica's readiness and /metrics. Exit code 0 when every replica answers, is "
        "ready and serves the same default version of every model; 1 otherwise.",
    )
    status.add_argument("--model", help="only this model")
    status.add_argument("--endpoints", help="replicas, comma separated (host:port or URLs); default: ask Kubernetes")
    status.add_argument("--namespace", help="Kubernetes namespace (default: the service account's or context's)")
    status.add_argument("--service", default="rtserve", help="the Service whose endpoints are the replicas")
    status.add_argument(
        "--selector", help="label selector for the Services instead, e.g. app.kubernetes.io/name=rtserve"
    )
    status.add_argument("--timeout", type=float, default=3.0, help="seconds per request to a replica")


def add_repository_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repository", help="a folder or s3://bucket/prefix (RTSERVE_REPOSITORY, default ./models)")


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by whichever options were given."""
    names = ("repository", "host", "port", "grpc_port", "models", "cache_dir", "poll_interval_s", "log_level")
    overrides: dict[str, Any] = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    return Settings(**overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # TensorFlow's C++ INFO/WARNING lines (oneDNN banners, per-op failures of synthetic warm-up) drown the
    # server's own log; errors still show. Set TF_CPP_MIN_LOG_LEVEL to override.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return run(args)
    except (ServingError, ValueError) as error:
        # Operator mistakes and unreachable stores get one readable line, not a traceback.
        print(f"rtserve: error: {error}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    if args.command == "demo-model":
        return demo_model(args.destination)
    settings = settings_from(args)
    # The server logs to stdout in RTSERVE_LOG_FORMAT; the other commands print their results on stdout, so their
    # log lines go to stderr.
    configure_logging(settings.log_level, settings.log_format, None if args.command == "serve" else sys.stderr)
    quiet_libraries()
    if args.command == "serve":
        return serve(settings)
    if args.command == "push":
        return push(settings, args.source, args.model, args.version, args.profile, args.profile_bins)
    if args.command == "rollout":
        return rollout(settings, args)
    if args.command == "fleet":
        return fleet_status(args)
    return list_repository(settings, args.model)


def quiet_libraries() -> None:
    # botocore narrates every credential lookup at INFO; only its warnings are news to an operator.
    for noisy in ("botocore", "boto3", "s3transfer"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def serve(settings: Settings) -> int:
    from service.observability.startup import IMPORTS, TENSORFLOW_IMPORT, Startup

    startup = Startup.now()
    # The largest part of a cold start, timed on its own (the runtime and TF Serving's messages both need it).
    importlib.import_module("tensorflow")
    startup.mark(TENSORFLOW_IMPORT)
    from service.api.rest.server import run_server
    from service.app import create_app
    from service.manager.heap import freeze_imports

    freeze_imports()  # before any load: the first settle then walks the model's objects, not TensorFlow's
    startup.mark(IMPORTS)
    app = create_app(settings, startup=startup)
    run_server(settings, app.rest.asgi, app.components.lifecycle, [app.grpc] if app.grpc else [])
    return 0


def push(
    settings: Settings,
    source: Path,
    model: str,
    version: int | None,
    profile: Path | None = None,
    profile_bins: int = DEFAULT_BINS,
) -> int:
    from service.repository.factory import open_repository
    from service.tools.push import push_version

    repository = open_repository(settings.repository, settings.s3)
    published = push_version(
        repository, source, model, version, sys.stderr.isatty(), profile_data=profile, profile_bins=profile_bins
    )
    print(f"published {model} version {published} to {repository.uri}")
    return 0


def list_repository(settings: Settings, model: str | None) -> int:
    from service.repository.factory import open_repository
    from service.tools.push import describe_repository

    repository = open_repository(settings.repository, settings.s3)
    rows = describe_repository(repository, model)
    print(f"{'MODEL':<24} {'VERSION':>8} {'FILES':>6} {'BYTES':>12}  COMPLETE")
    for row in rows:
        complete = "yes" if row.complete else "no (no MANIFEST.json)"
        print(f"{row.model:<24} {row.version:>8} {row.files:>6} {row.bytes:>12}  {complete}")
    return 0


def activation_time(at: str | None, in_s: float | None, now: float) -> float | None:
    from service.manager.routing import parse_activation

    if in_s is not None:
        if in_s <= 0:
            raise ValueError("--in needs a positive number of seconds")
        return now + in_s
    return parse_activation(at) if at is not None else None


def rollout(settings: Settings, args: argparse.Namespace) -> int:
    from service.repository.factory import open_repository
    from service.tools.rollout import RolloutRequest, describe
    from service.tools.rollout import rollout as write_rollout

    now = time.time()
    request = RolloutRequest(
        args.model, args.version, args.label, activation_time(args.at, args.in_s, now), args.canary_weight
    )
    done = write_rollout(open_repository(settings.repository, settings.s3), request, now)
    for warning in done.warnings:
        print(f"rtserve: warning: {warning}", file=sys.stderr)
    print(done.after.to_json().decode(), end="")
    print(describe(args.model, done))
    return 0


def fleet_status(args: argparse.Namespace) -> int:
    from service.tools.fleet import connect_kubernetes, kubernetes_endpoints, render
    from service.tools.fleet import fleet_status as read_fleet

    if args.endpoints:
        endpoints = [e for e in args.endpoints.split(",") if e.strip()]
    else:
        endpoints = kubernetes_endpoints(connect_kubernetes(), args.namespace, args.service, args.selector)
        if not endpoints:
            print("rtserve: no endpoints found for the Service", file=sys.stderr)
            return 1
    text, converged = render(read_fleet(endpoints, args.timeout), args.model)
    print(text)
    return 0 if converged else 1


def demo_model(destination: Path) -> int:
    from service.tools.demo import write_demo_model

    path = write_demo_model(destination)
    print(f"wrote the demo model to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
