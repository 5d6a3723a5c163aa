"""The ``conv-frames`` command line: ``demo``, ``export`` and ``emulator``.

Credentials come only from the ``TWILIO_*`` environment: secrets passed as
arguments would show in ``ps`` and shell history.

Exit codes (for cron):
    0 success; 1 other conv_frames error; 2 configuration or usage error;
    3 the API refused the request (4xx); 4 transient faults outlasted the
    retries (429, 5xx, network, unreadable answers); 5 the API broke its
    contract (schema); 6 a next-page link was refused; 7 the export could not
    be written; 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ._client import export_users, load_users
from ._errors import (
    APIError,
    ConfigurationError,
    ConvFramesError,
    ExportError,
    PaginationError,
    SchemaError,
    TransportError,
)

__all__ = ["exit_code", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIGURATION = 2
EXIT_API = 3
EXIT_TRANSIENT = 4
EXIT_SCHEMA = 5
EXIT_PAGINATION = 6
EXIT_EXPORT = 7
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    args = _parser().parse_args(argv)
    level = logging.WARNING
    if args.verbose or args.debug:
        level = logging.DEBUG if args.debug else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.run(args))
    except ConvFramesError as error:
        if args.debug:
            raise
        print(f"conv-frames: {type(error).__name__}: {error}", file=sys.stderr)
        return exit_code(error)
    except KeyboardInterrupt:
        print("conv-frames: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def exit_code(error: ConvFramesError) -> int:
    """Map an error to the documented exit code."""
    if isinstance(error, ConfigurationError):
        return EXIT_CONFIGURATION
    if isinstance(error, APIError):
        return EXIT_TRANSIENT if error.is_transient else EXIT_API
    if isinstance(error, TransportError):
        return EXIT_TRANSIENT
    if isinstance(error, SchemaError):
        return EXIT_SCHEMA
    if isinstance(error, PaginationError):
        return EXIT_PAGINATION
    if isinstance(error, ExportError):
        return EXIT_EXPORT
    return EXIT_ERROR


def _demo(args: argparse.Namespace) -> int:
    from .emulator import Emulator

    with Emulator(users=args.users, seed=args.seed) as emulator:
        print(f"emulator: {len(emulator.users())} users at {emulator.base_url}")
        started = time.perf_counter()
        frame = load_users(
            emulator.service_sid,
            account_sid=emulator.account_sid,
            auth_token=emulator.auth_token,
            base_url=emulator.base_url,
            parquet_path=_output(args.output),
        )
        seconds = time.perf_counter() - started
    print(_summary(frame, args.output, seconds))
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    attrs = export_users(
        args.service_sid,
        _output(args.output),
        base_url=args.base_url,
        page_size=args.page_size,
        timeout=args.timeout,
        max_attempts=args.max_attempts,
        max_retry_wait=args.max_retry_wait,
        invalid_attributes=args.invalid_attributes,
    )
    print(
        f"exported {attrs['rows']} users of {args.service_sid} to {args.output}: "
        f"{attrs['pages']} pages, {attrs['retries']} retries, "
        f"{time.perf_counter() - started:.2f} s"
    )
    return EXIT_OK


def _emulator(args: argparse.Namespace) -> int:
    from .emulator import Emulator, FaultPlan

    faults = FaultPlan.parse(args.faults) if args.faults else None
    emulator = Emulator(
        users=args.users,
        seed=args.seed,
        port=args.port,
        page_size_cap=args.page_size_cap,
        latency=args.latency,
        faults=faults,
    )
    with emulator:
        print(f"Twilio Conversations emulator on {emulator.base_url}")
        print(f"  service:  {emulator.service_sid} ({len(emulator.users())} users)")
        print(f"  export TWILIO_ACCOUNT_SID={emulator.account_sid}")
        print(f"  export TWILIO_AUTH_TOKEN={emulator.auth_token}")
        print("Ctrl-C stops it.", flush=True)
        emulator.serve_forever()
    return EXIT_OK


def _output(path: str) -> Path:
    output = Path(path)
    if not output.parent.is_dir():
        raise ConfigurationError(
            f"the folder of --output {path!r} does not exist; create it first"
        )
    return output


def _summary(frame: pd.DataFrame, output: str, seconds: float) -> str:
    attrs = frame.attrs
    created = frame["date_created"].dt.year.value_counts().sort_index()
    lines = [
        f"loaded {len(frame)} users in {attrs['pages']} pages "
        f"({attrs['requests']} requests, {attrs['retries']} retries, {seconds:.2f} s)",
        f"wrote {output} ({Path(output).stat().st_size:,} bytes)",
        "",
        "dtypes:",
        frame.dtypes.to_string(),
        "",
        "first rows:",
        frame[["identity", "friendly_name", "date_created", "attributes"]]
        .head()
        .to_string(max_colwidth=40),
        "",
        "users created per year:",
        created.to_string(),
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conv-frames",
        description="Twilio Conversations users as typed DataFrames and Parquet.",
        epilog="Exit codes: 0 ok, 2 configuration, 3 API refused (4xx), "
        "4 transient faults outlasted retries, 5 schema, 6 pagination, 7 export.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    _add_demo(commands)
    _add_export(commands)
    _add_emulator(commands)
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log INFO lines")
    parser.add_argument(
        "--debug", action="store_true", help="log DEBUG lines and show tracebacks"
    )


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo", help="load the bundled emulator's users and write Parquet"
    )
    demo.add_argument("--users", type=int, default=1234, help="users to serve")
    demo.add_argument("--seed", type=int, default=0, help="seed of the dataset")
    demo.add_argument("--output", default="data/demo_users.parquet")
    _common(demo)
    demo.set_defaults(run=_demo)


def _add_export(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = commands.add_parser(
        "export",
        help="export one service's users to Parquet (credentials from TWILIO_*)",
    )
    export.add_argument("service_sid", help="the Conversations service, IS...")
    export.add_argument("--output", required=True, help="the Parquet file to write")
    export.add_argument("--base-url", help="API root (default: Twilio, or the region)")
    export.add_argument("--page-size", type=int, default=50)
    export.add_argument("--timeout", type=float, default=30.0, help="seconds")
    export.add_argument("--max-attempts", type=int, default=5)
    export.add_argument("--max-retry-wait", type=float, default=60.0, help="seconds")
    export.add_argument(
        "--invalid-attributes", choices=("raise", "null"), default="raise"
    )
    _common(export)
    export.set_defaults(run=_export)


def _add_emulator(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    emulator = commands.add_parser(
        "emulator", help="serve the local API emulator on 127.0.0.1 until Ctrl-C"
    )
    emulator.add_argument("--users", type=int, default=1234)
    emulator.add_argument("--seed", type=int, default=0)
    emulator.add_argument("--port", type=int, default=8765)
    emulator.add_argument("--page-size-cap", type=int, default=50)
    emulator.add_argument("--latency", type=float, default=0.0, help="seconds")
    emulator.add_argument(
        "--faults", help="fault plan, e.g. 'rate=0.2,seed=7' or '0=status_503'"
    )
    _common(emulator)
    emulator.set_defaults(run=_emulator)
