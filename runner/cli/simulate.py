"""``i2v-runner simulate``: its options, and serving the simulator with them; and the
in-process simulator of ``run --simulate``."""

from __future__ import annotations

import argparse

from runner import config as cfg
from runner.cli.values import fraction, positive
from runner.errors import (
    ConfigError,
)
from runner.simulator import config as simcfg
from runner.simulator.config import PROFILES, SimConfig


def simulate_profile() -> SimConfig:
    """The in-process simulator of ``--simulate``: runs of 5-12 s, so the example batch
    finishes within about a minute at the real client defaults (5 s poll floor, 60/60)."""
    return SimConfig(
        runtime_mean=8.0,
        runtime_min=5.0,
        runtime_max=12.0,
        outlier_rate=0.0,
        queue_delay=1.0,
        status_quantum=1.0,
    )


def add_simulate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``simulate`` subcommand and its switches."""
    sim = sub.add_parser(
        "simulate",
        help="run the built-in API simulator standalone",
        description="Serve the built-in Eachlabs API simulator on 127.0.0.1 for other clients. "
        "By default it is as rough as the real service: terse error bodies, best-effort "
        "cancels, an executions list that lags, image URLs on private networks not fetched. "
        "--profile picks a set of switches (real: those defaults; kind: the old neat server; "
        "realistic: the defaults plus a few percent of transient faults); the flags after it "
        "override it. Durations are the service's seconds, divided by --speed. Each API key "
        "is its own account, as on the real service: its own in-flight cap, request rate and "
        "predictions (another key's prediction answers as an unknown id).",
    )
    sim.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    sim.add_argument(
        "--port", type=int, default=8750, help="port (default: %(default)s; 0 picks one)"
    )
    sim.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="real",
        help="a set of switches; later flags override it (default: %(default)s)",
    )
    sim.add_argument(
        "--key",
        action="append",
        metavar="KEY",
        help="accept only this API key (repeat for several; a wrong key gets 401 {}); "
        "without --key any non-empty key is accepted. Each key is its own account, with its "
        "own --concurrency cap, --rate window and predictions",
    )
    sim.add_argument(
        "--concurrency", type=positive(int), help="each account's in-flight cap (default: 10)"
    )
    sim.add_argument(
        "--rate", default=None, help="enforce N/SECONDS API requests per account (sliding window)"
    )
    sim.add_argument(
        "--rate-burst",
        type=positive(int),
        metavar="N",
        help="limit each account's API requests with a token bucket of N instead (refilled at "
        "--rate, default 60/60), as gateways do: a burst over N is refused even when it is "
        "legal per window",
    )
    sim.add_argument(
        "--speed",
        type=positive(float),
        default=1.0,
        help="time compression: 100 makes a 200 s prediction take 2 s (default: %(default)s)",
    )
    sim.add_argument(
        "--failure-rate", type=fraction, help="share of predictions that fail (default: 0)"
    )
    sim.add_argument("--seed", type=int, help="random seed (default: 0)")
    sim.add_argument(
        "--error-bodies",
        choices=sorted(simcfg.ERROR_BODIES),
        help="terse: the real gateway's 400/401/422 {} and 404 not found (default); "
        "helpful: texts saying what was wrong",
    )
    sim.add_argument(
        "--cancel-ignored-rate",
        type=fraction,
        metavar="SHARE",
        help="share of cancels that never take effect (default: 0.1)",
    )
    sim.add_argument(
        "--cancel-at-once",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a cancel ends the prediction at once, not at its next status check (default: no)",
    )
    sim.add_argument(
        "--cancel-answer-status",
        choices=sorted(simcfg.CANCEL_ANSWERS),
        help="the status word a cancel answers, whatever happens (default: success)",
    )
    sim.add_argument(
        "--executions-lag",
        type=float,
        metavar="SECONDS",
        help="a new prediction shows in /v1/executions only this long after its create "
        "(default: 3)",
    )
    sim.add_argument(
        "--executions-window-days",
        type=float,
        metavar="DAYS",
        help="without from, /v1/executions lists only this many days back; 0: everything "
        "(default: 90)",
    )
    sim.add_argument(
        "--refuse-private-urls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="image URLs on localhost, loopback, private or link-local addresses fail "
        "INPUT_DOWNLOAD_ERROR, as the real service cannot reach them (default: yes)",
    )
    sim.add_argument(
        "--fault-rate",
        type=fraction,
        metavar="SHARE",
        help="share of requests to the fault endpoints that fault (default: 0)",
    )
    sim.add_argument(
        "--fault-endpoints",
        metavar="LIST",
        help="comma list of what faults may hit, from "
        f"{','.join(sorted(simcfg.FAULT_ENDPOINTS))} "
        f"(default: {','.join(sorted(simcfg.DEFAULT_FAULT_ENDPOINTS))})",
    )
    sim.add_argument(
        "--fault-kinds",
        metavar="LIST",
        help=f"comma list of faults, from {','.join(sorted(simcfg.FAULT_KINDS))}; reset closes "
        "the connection unanswered, timeout holds the request --fault-hang seconds then 504 "
        f"(default: {','.join(sorted(simcfg.DEFAULT_FAULT_KINDS))})",
    )
    sim.add_argument(
        "--fault-hang",
        type=float,
        metavar="SECONDS",
        help="how long a timeout fault holds its request (default: 60)",
    )
    sim.add_argument(
        "--create-fault-rate",
        type=fraction,
        metavar="SHARE",
        help="share of creates that create the prediction but answer 500 (default: 0)",
    )
    sim.add_argument(
        "--truncate-downloads-rate",
        type=fraction,
        metavar="SHARE",
        help="share of CDN downloads cut off half way (default: 0)",
    )


async def serve(args: argparse.Namespace) -> None:
    """Serve the simulator: ``--profile``, then the flags given, then ``--speed``.

    Raises ConfigError for switches the simulator refuses."""
    given = {
        "concurrency": args.concurrency,
        "failure_rate": args.failure_rate,
        "seed": args.seed,
        "api_keys": frozenset(args.key) if args.key else None,
        "error_bodies": args.error_bodies,
        "cancel_ignored_rate": args.cancel_ignored_rate,
        "cancel_at_once": args.cancel_at_once,
        "cancel_answer_status": args.cancel_answer_status,
        "executions_lag": args.executions_lag,
        "refuse_private_urls": args.refuse_private_urls,
        "fault_rate": args.fault_rate,
        "fault_hang": args.fault_hang,
        "create_fault_rate": args.create_fault_rate,
        "truncate_downloads_rate": args.truncate_downloads_rate,
        "rate_burst": args.rate_burst,
    }
    changes: dict[str, object] = {name: v for name, v in given.items() if v is not None}
    try:
        if args.fault_endpoints is not None:
            changes["fault_endpoints"] = simcfg.parse_names(
                args.fault_endpoints, simcfg.FAULT_ENDPOINTS, "--fault-endpoints"
            )
        if args.fault_kinds is not None:
            changes["fault_kinds"] = simcfg.parse_names(
                args.fault_kinds, simcfg.FAULT_KINDS, "--fault-kinds"
            )
        if args.executions_window_days is not None:
            days = args.executions_window_days
            changes["executions_window"] = days * 86400.0 if days else None
        if args.rate:
            changes["rate_limit"], changes["rate_window"] = cfg.parse_rate(args.rate)
        sim_config = SimConfig.profile(args.profile, **changes).scaled(args.speed)
    except ValueError as exc:
        raise ConfigError(f"simulate: {exc}") from None
    from runner.simulator import serve_forever  # the server: imported only when used

    await serve_forever(sim_config, args.host, args.port)
