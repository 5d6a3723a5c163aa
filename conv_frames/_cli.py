"""The ``conv-frames`` command line: ``demo``, ``export``, ``diff`` and ``emulator``.

Credentials come only from the ``TWILIO_*`` environment: secrets passed as
arguments would show in ``ps`` and shell history.

Exit codes (for cron):
    0 success; 1 other conv_frames error; 2 configuration or usage error;
    3 the API refused the request (4xx); 4 transient faults outlasted the
    retries (429, 5xx, network, unreadable answers); 5 the API broke its
    contract (schema); 6 a next-page link was refused; 7 the export could not
    be written; 8 another export holds the dataset's lock (nothing was
    written); 130 interrupted. When ``export --dataset`` fails for some
    services and not others, the code is the first failed service's.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ._client import (
    DEFAULT_TIMEOUT,
    check_max_pages,
    check_timeout,
    export_users,
    load_users,
)
from ._config import check_count, check_page_size, check_seconds
from ._diff import UsersDiff, diff_snapshots, diff_users
from ._errors import (
    APIError,
    ConfigurationError,
    ConvFramesError,
    DatasetLockedError,
    ExportError,
    PaginationError,
    SchemaError,
    TransportError,
)
from ._parquet import atomic_path, destination, read_users_file
from ._services import check_max_workers
from ._snapshots import ServiceSnapshot, export_snapshots

if TYPE_CHECKING:
    from .emulator import Emulator

__all__ = ["exit_code", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIGURATION = 2
EXIT_API = 3
EXIT_TRANSIENT = 4
EXIT_SCHEMA = 5
EXIT_PAGINATION = 6
EXIT_EXPORT = 7
EXIT_LOCKED = 8
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


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
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.run(args))
    except ConvFramesError as error:
        print(f"conv-frames: {type(error).__name__}: {error}", file=sys.stderr)
        if args.debug:
            traceback.print_exception(error, file=sys.stderr)
        return exit_code(error)
    except KeyboardInterrupt:
        print("conv-frames: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`conv-frames diff --list | head`): stop quietly,
        # and keep Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except _Terminated:
        print("conv-frames: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every ``finally`` runs.

    cron's timeout, systemd and Kubernetes stop a job with SIGTERM; unwinding
    removes the half-written export instead of leaving it on disk.
    """


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated


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
    if isinstance(error, DatasetLockedError):
        return EXIT_LOCKED
    if isinstance(error, ExportError):
        return EXIT_EXPORT
    return EXIT_ERROR


def _demo(args: argparse.Namespace) -> int:
    with _running_emulator(users=args.users, seed=args.seed) as emulator:
        print(f"emulator: {len(emulator.users())} users at {emulator.base_url}")
        started = time.perf_counter()
        frame = load_users(
            emulator.service_sid,
            account_sid=emulator.account_sid,
            auth_token=emulator.auth_token,
            base_url=emulator.base_url,
            parquet_path=_output(args.output),
            progress=args.progress,
        )
        seconds = time.perf_counter() - started
    print(_summary(frame, args.output, seconds))
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    _check_export_flags(args)
    if args.dataset is not None:
        return _export_dataset(args)
    service_sid = _one_service(args)
    started = time.perf_counter()
    attrs = export_users(
        service_sid,
        _output(args.output),
        page_size=args.page_size,
        invalid_attributes=args.invalid_attributes,
        progress=args.progress,
        **_client_options(args),
    )
    print(
        f"exported {attrs['rows']} users of {service_sid} to {args.output}: "
        f"{attrs['pages']} pages, {attrs['retries']} retries, "
        f"{time.perf_counter() - started:.2f} s"
    )
    return EXIT_OK


def _check_export_flags(args: argparse.Namespace) -> None:
    """Run the library's checks on the flags, before any work, naming the flags."""
    if args.output is not None:
        _checked_output(args.output, (".parquet",))
    check_page_size(args.page_size, "--page-size")
    check_max_pages(args.max_pages, "--max-pages")
    check_timeout(args.timeout, "--timeout")
    check_count(args.max_attempts, "--max-attempts")
    check_seconds(args.max_retry_wait, "--max-retry-wait")
    check_seconds(args.max_total_wait, "--max-total-wait")
    if args.keep is not None:
        check_count(args.keep, "--keep", " (snapshots kept per service)")
    if args.wait is not None:
        check_seconds(args.wait, "--wait", " (how long to wait for another export)")
    if args.max_workers is not None:
        check_max_workers(args.max_workers, "--max-workers")


def _client_options(args: argparse.Namespace) -> dict[str, Any]:
    """The export options shared by the single-file and the dataset export."""
    return {
        "base_url": args.base_url,
        # --timeout is the read timeout; a connection gets at most 10 s of it.
        "timeout": (min(DEFAULT_TIMEOUT[0], args.timeout), args.timeout),
        "max_attempts": args.max_attempts,
        "max_retry_wait": args.max_retry_wait,
        "max_total_wait": args.max_total_wait,
        "max_pages": args.max_pages,
    }


def _one_service(args: argparse.Namespace) -> str:
    """The service of a single-file export; the dataset options are refused."""
    services = [*filter(None, [args.service_sid]), *args.service]
    dataset_only = [
        flag
        for flag, value in (
            ("--all-services", args.all_services),
            ("--default-service", args.default_service),
            ("--keep", args.keep is not None),
            ("--wait", args.wait is not None),
            ("--max-workers", args.max_workers is not None),
        )
        if value
    ]
    if len(services) != 1 or dataset_only:
        given = ", ".join(dataset_only) or f"{len(services)} services"
        raise ConfigurationError(
            f"--output writes one service to one file, and got {given}; name one "
            "service, or write snapshots of several with --dataset ROOT"
        )
    return str(services[0])


def _export_dataset(args: argparse.Namespace) -> int:
    """Publish a snapshot per service; one line each, the first failure's code."""
    run = export_snapshots(
        args.dataset,
        [*filter(None, [args.service_sid]), *args.service],
        all_services=args.all_services,
        default_service=args.default_service,
        keep=args.keep,
        max_workers=4 if args.max_workers is None else args.max_workers,
        lock_timeout=args.wait or 0.0,
        page_size=args.page_size,
        invalid_attributes=args.invalid_attributes,
        **_client_options(args),
    )
    code = EXIT_OK
    for service in run.services:
        if service.error is None:
            print(_published_line(service))
            continue
        name = service.service_sid or service.source
        error = service.error
        print(f"conv-frames: {name}: {type(error).__name__}: {error}", file=sys.stderr)
        if args.debug:
            traceback.print_exception(error, file=sys.stderr)
        code = code or exit_code(error)
    return code


def _published_line(service: ServiceSnapshot) -> str:
    manifest = service.manifest or {}
    line = (
        f"exported {manifest['rows']} users of {service.service_sid} to "
        f"{service.path}: {manifest['pages']} pages, {manifest['retries']} retries, "
        f"{service.seconds:.2f} s"
    )
    if manifest.get("column_changes"):
        line += f"; columns changed: {'; '.join(manifest['column_changes'])}"
    return line


def _diff(args: argparse.Namespace) -> int:
    columns = args.columns.split(",") if args.columns else None
    output = _changes_output(args.output) if args.output else None
    if args.dataset is not None:
        if args.files:
            raise ConfigurationError("diff takes two files or --dataset, not both")
        diff = diff_snapshots(
            args.dataset, args.service, args.old, args.new, columns=columns
        )
    elif len(args.files) == 2:
        old, new = (_read_users_file(path) for path in args.files)
        diff = diff_users(old, new, columns=columns)
    else:
        raise ConfigurationError(
            "diff compares two Parquet files (OLD NEW), or two snapshots of "
            "--dataset ROOT (--old previous --new latest by default)"
        )
    if output is not None:  # first: a failure is then the only line printed
        _write_changes(diff, output)
    print(diff.summary)
    if args.list:
        _print_changes(diff)
    return EXIT_OK


def _read_users_file(path: str) -> pd.DataFrame:
    if Path(path).is_dir():
        raise ConfigurationError(
            f"{path!r} is a folder, not a Parquet file; to compare snapshots of a "
            "dataset there, pass it as --dataset"
        )
    if not Path(path).is_file():
        raise ConfigurationError(f"{path!r} does not exist; pass two Parquet files")
    return read_users_file(path)


#: The formats ``diff --output`` writes, by file suffix.
_CHANGES_FORMATS = (".csv", ".parquet")


def _changes_output(path: str) -> Path:
    """Check ``diff --output`` before any work: a known suffix, an existing folder."""
    return _checked_output(path, _CHANGES_FORMATS)


def _checked_output(path: str, formats: tuple[str, ...]) -> Path:
    """Check an ``--output`` before any work: one of ``formats``, a folder that is."""
    output = destination(_output(path))  # a folder or a device in the way: exit 7
    if output.suffix.lower() not in formats:
        raise ConfigurationError(
            f"--output {path!r} names no format conv-frames writes here; end it "
            f"in {' or '.join(formats)}"
        )
    return output


def _print_changes(diff: UsersDiff) -> None:
    changes = diff.changes
    for change, sid, identity, fields in zip(
        changes["change"],
        changes["sid"],
        changes["identity"],
        changes["changed_fields"],
        strict=True,
    ):
        print(f"{change:<8} {sid} {identity} {','.join(fields)}".rstrip())


def _write_changes(diff: UsersDiff, path: Path) -> None:
    """Write the changes whole or not at all (ExportError, exit 7)."""
    with atomic_path(path) as temporary:
        if path.suffix.lower() == ".csv":
            changes = diff.changes.assign(
                changed_fields=diff.changes["changed_fields"].map(";".join)
            )
            changes.to_csv(temporary, index=False)
        else:
            diff.changes.to_parquet(temporary, index=False)


def _emulator(args: argparse.Namespace) -> int:
    from .emulator import FaultPlan

    try:
        faults = FaultPlan.parse(args.faults) if args.faults else None
    except ValueError as error:  # a usage error: one line and exit 2, no traceback
        raise ConfigurationError(str(error)) from error
    with _running_emulator(
        users=args.users,
        seed=args.seed,
        port=args.port,
        page_size_cap=args.page_size_cap,
        latency=args.latency,
        faults=faults,
        max_concurrency=args.max_concurrency,
        rate_limit=args.rate_limit,
        reachability=args.reachability,
    ) as emulator:
        print(f"Twilio Conversations emulator on {emulator.base_url}")
        print(f"  service:  {emulator.service_sid} ({len(emulator.users())} users)")
        print(f"  limits:   {_emulator_limits(args)}")
        print(f"  export TWILIO_ACCOUNT_SID={emulator.account_sid}")
        print(f"  export TWILIO_AUTH_TOKEN={emulator.auth_token}")
        print("Ctrl-C stops it.", flush=True)
        emulator.serve_forever()
    return EXIT_OK


def _emulator_limits(args: argparse.Namespace) -> str:
    """The emulated account's limits and presence, as the banner shows them."""
    parts = [
        "no concurrency limit"
        if args.max_concurrency is None
        else f"concurrency limit {args.max_concurrency}",
        "no rate limit"
        if args.rate_limit is None
        else f"rate limit {args.rate_limit:g}/s",
        f"latency {args.latency * 1000:g} ms",
        f"reachability {'on' if args.reachability else 'off'}",
    ]
    return ", ".join(parts)


@contextlib.contextmanager
def _running_emulator(**settings: Any) -> Iterator[Emulator]:
    """Start the emulator; bad settings or a busy port are usage errors (exit 2)."""
    from .emulator import Emulator

    try:
        emulator = Emulator(**settings)
        emulator.start()
    except (ValueError, OverflowError) as error:  # OverflowError: a port > 65535
        raise ConfigurationError(str(error)) from error
    except OSError as error:
        port = settings.get("port", 0)
        raise ConfigurationError(
            f"the emulator cannot listen on 127.0.0.1:{port}: {error.strerror}; "
            "choose another --port"
        ) from error
    try:
        yield emulator
    finally:
        emulator.stop()


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
        "4 transient faults outlasted retries, 5 schema, 6 pagination, 7 export, "
        "8 dataset locked by another export.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    _add_demo(commands)
    _add_export(commands)
    _add_diff(commands)
    _add_emulator(commands)
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log INFO lines")
    parser.add_argument(
        "--debug", action="store_true", help="log DEBUG lines and show tracebacks"
    )


def _progress_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar on stderr (default: only when it is a terminal)",
    )


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo", help="load the bundled emulator's users and write Parquet"
    )
    demo.add_argument("--users", type=int, default=1234, help="users to serve")
    demo.add_argument("--seed", type=int, default=0, help="seed of the dataset")
    demo.add_argument("--output", default="data/demo_users.parquet")
    _progress_flag(demo)
    _common(demo)
    demo.set_defaults(run=_demo)


def _add_export(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = commands.add_parser(
        "export",
        help="export users to a Parquet file, or as snapshots to a dataset "
        "(credentials from TWILIO_*)",
    )
    export.add_argument(
        "service_sid", nargs="?", help="the Conversations service, IS..."
    )
    where = export.add_mutually_exclusive_group(required=True)
    where.add_argument("--output", help="the Parquet file to write (one service)")
    where.add_argument(
        "--dataset",
        metavar="ROOT",
        help="publish a snapshot per service under ROOT (a folder or s3://...)",
    )
    export.add_argument(
        "--service",
        action="append",
        default=[],
        metavar="SID",
        help="a service to export; repeat for several",
    )
    export.add_argument(
        "--all-services", action="store_true", help="every service /v1/Services lists"
    )
    export.add_argument(
        "--default-service",
        action="store_true",
        help="the account's default service (named by /v1/Configuration)",
    )
    export.add_argument(
        "--keep", type=int, metavar="N", help="keep the newest N snapshots per service"
    )
    export.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="wait this long for another export of the dataset (default: exit 8)",
    )
    export.add_argument(
        "--max-workers", type=int, metavar="N", help="services at once (default 4)"
    )
    export.add_argument("--base-url", help="API root (default: Twilio, or the region)")
    export.add_argument("--page-size", type=int, default=50)
    export.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT[1], help="read timeout, s"
    )
    export.add_argument("--max-attempts", type=int, default=5)
    export.add_argument("--max-retry-wait", type=float, default=60.0, help="seconds")
    export.add_argument(
        "--max-total-wait", type=float, default=300.0, help="seconds, per page"
    )
    export.add_argument("--max-pages", type=int, help="stop past this many pages")
    export.add_argument(
        "--invalid-attributes", choices=("raise", "null"), default="raise"
    )
    _progress_flag(export)
    _common(export)
    export.set_defaults(run=_export)


def _add_diff(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    diff = commands.add_parser(
        "diff",
        help="users added, removed and changed between two snapshots or files",
    )
    diff.add_argument("files", nargs="*", metavar="OLD NEW", help="two Parquet files")
    diff.add_argument("--dataset", metavar="ROOT", help="compare snapshots of ROOT")
    diff.add_argument("--service", metavar="SID", help="the service (if ROOT has more)")
    diff.add_argument("--old", default="previous", help="snapshot key or 'previous'")
    diff.add_argument("--new", default="latest", help="snapshot key or 'latest'")
    diff.add_argument("--columns", help="comma-separated fields to compare")
    diff.add_argument(
        "--list", action="store_true", help="also print one line per changed user"
    )
    diff.add_argument("--output", help="write the changes to a .parquet or .csv file")
    _common(diff)
    diff.set_defaults(run=_diff)


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
    emulator.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="added before each answer (default 0)",
    )
    emulator.add_argument(
        "--max-concurrency",
        type=int,
        metavar="N",
        help="requests the account may have in flight; more are answered 429 "
        "(Twilio error 20429) (default: no limit)",
    )
    emulator.add_argument(
        "--rate-limit",
        type=float,
        metavar="PER_SECOND",
        help="requests a second the account may send; more are answered 429 "
        "with Retry-After (default: no limit)",
    )
    emulator.add_argument(
        "--reachability",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="whether fetching one user reports is_online and is_notifiable; "
        "--no-reachability answers null, as a service with reachability off "
        "(default: on)",
    )
    emulator.add_argument(
        "--faults", help="fault plan, e.g. 'rate=0.2,seed=7' or '0=status_503'"
    )
    _common(emulator)
    emulator.set_defaults(run=_emulator)
