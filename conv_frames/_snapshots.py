"""Scheduled snapshots: export services into the dataset, and read them back.

:func:`export_snapshots` is what ``conv-frames export --dataset`` runs: under
the dataset's lock it picks the run's snapshot key, resolves the selected
services (named, listed by ``/v1/Services``, the default one that
``/v1/Configuration`` names and ``/v1/Users`` lists), streams each to Parquet
in a staging folder, and publishes it with a manifest (see
:mod:`conv_frames._dataset` for the layout). One service's failure is
reported in its entry and leaves the others alone.
:func:`read_snapshot` and :func:`list_snapshots` read published snapshots;
:func:`read_parquet` reads an exported file or a snapshot, whichever a path
names.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._client import Client, check_max_pages, open_client
from ._config import check_count, check_page_size, check_seconds, check_service_sid
from ._dataset import (
    MANIFEST_FORMAT,
    PART_NAME,
    SCHEMA_VERSION,
    Dataset,
    Listing,
    describe_file,
    dump_manifest,
    export_errors,
    is_snapshot_key,
    keys_after,
    next_snapshot_key,
    read_errors,
)
from ._errors import (
    ConfigurationError,
    ConvFramesError,
    ExportError,
    SchemaError,
    SnapshotError,
    storage_errors,
)
from ._frame import InvalidAttributes, check_dtype_backend, check_invalid_attributes
from ._parquet import read_users_file
from ._schema import DtypeBackend
from ._services import check_max_workers, shared_limit
from ._transport import CancelEvent

__all__ = [
    "ServiceSnapshot",
    "SnapshotRun",
    "describe_column_changes",
    "export_snapshots",
    "list_snapshots",
    "read_parquet",
    "read_snapshot",
]

logger = logging.getLogger(__name__)

DEFAULT_SERVICE_SOURCE = "/v1/Users"
#: Names the account's default service, whether or not it has users.
CONFIGURATION_SOURCE = "/v1/Configuration"


@dataclass(frozen=True)
class ServiceSnapshot:
    """What a run did for one service.

    Attributes:
        service_sid: The service; None when it could not be learnt (the
            listing of services or the default-service lookup failed).
        source: The list the users were read from (``/v1/Users`` for the
            account's default service), or the request that failed.
        snapshot: The run's snapshot key, such as ``"2026-12-04T020000Z"``.
        path: Where the snapshot was published; None if it failed.
        manifest: The published manifest; None if it failed.
        error: Why it failed; None if it was published.
        seconds: Time spent on this service.
    """

    service_sid: str | None
    source: str
    snapshot: str
    path: str | None = None
    manifest: Mapping[str, Any] | None = None
    error: ConvFramesError | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the snapshot was published."""
        return self.error is None


@dataclass(frozen=True)
class SnapshotRun:
    """The outcome of :func:`export_snapshots`.

    Attributes:
        root: The dataset root, as given.
        snapshot: The key every snapshot of the run is published under.
        services: One entry per selected service, in selection order.
    """

    root: str
    snapshot: str
    services: tuple[ServiceSnapshot, ...]

    @property
    def ok(self) -> bool:
        """Whether every selected service was published."""
        return all(service.ok for service in self.services)

    @property
    def failed(self) -> list[ServiceSnapshot]:
        """The entries of the services that were not published."""
        return [service for service in self.services if not service.ok]

    def raise_for_failures(self) -> None:
        """Raise the first failed service's error, if any service failed."""
        for service in self.services:
            if service.error is not None:
                raise service.error


def export_snapshots(
    root: str | os.PathLike[str],
    service_sids: Sequence[str] = (),
    *,
    all_services: bool = False,
    default_service: bool = False,
    keep: int | None = None,
    max_workers: int = 4,
    lock_timeout: float | None = 0.0,
    page_size: int = 50,
    max_pages: int | None = None,
    invalid_attributes: InvalidAttributes = "raise",
    storage_options: Mapping[str, Any] | None = None,
    **client_options: Any,
) -> SnapshotRun:
    """Publish one snapshot of each selected service in the dataset at ``root``.

    Each service streams to Parquet a page at a time, so memory does not grow
    with its size. Services are exported concurrently, ``max_workers`` at
    most; a service that fails is reported in its entry and does not stop
    the others, nor touch earlier snapshots. Every snapshot of the run has
    one key: the run's start in UTC to the second, or one second past the
    newest key in the dataset, so that keys stay unique and in order. A key
    far ahead of the clock (a skewed host, a folder made by hand) does not
    move the run's key: the services that hold one fail with an
    :class:`ExportError` naming it. A folder whose name is not a valid key
    is not a snapshot: it is ignored with a WARNING, and never removed.

    Args:
        root: The dataset folder, or an fsspec URL (``s3://bucket/users``).
            A local root is created if its parent folder exists.
        service_sids: Services to export (``IS...``), in order.
        all_services: Also export every service ``GET /v1/Services`` lists.
        default_service: Also export the account's default service, named
            by ``GET /v1/Configuration`` and read from ``GET /v1/Users``
            (just once if selected otherwise too; an empty one is an empty
            snapshot).
        keep: Then keep only this many newest snapshots of each service
            that was published.
        max_workers: Services exported at once; each has one request in
            flight at most, fewer while the account answers 429: their
            requests share one adaptive limit (see :func:`load_services`).
        lock_timeout: Seconds to wait for another run on ``root`` to end;
            ``0`` gives up at once, ``None`` waits as long as it takes. On
            an object store the wait is a look at the other run's lease
            every second, with the ``sleep`` of ``client_options`` if given.
        page_size, max_pages, invalid_attributes: See :func:`load_users`.
        storage_options: Options of the fsspec filesystem (``endpoint_url``,
            credentials...); by default s3fs reads the usual AWS settings.
        **client_options: Options of :class:`Client` (credentials,
            ``base_url``, retries...). A ``session`` given is shared.

    Returns:
        The run: its key and, per service, the path and manifest or the
        error. :meth:`SnapshotRun.raise_for_failures` raises the first error.

    Raises:
        ConfigurationError: Bad arguments or credentials; nothing was sent.
        DatasetLockedError: Another run held the lock past ``lock_timeout``.
        ExportError: The dataset could not be opened, locked or cleaned.

    Example:
        >>> run = export_snapshots("users", all_services=True)  # doctest: +SKIP
        >>> run.raise_for_failures()  # doctest: +SKIP
    """
    selected = _check_selection(service_sids, all_services, default_service)
    _check_settings(
        keep, max_workers, lock_timeout, page_size, max_pages, invalid_attributes
    )
    # Options and credentials are checked first.
    with open_client(export_snapshots, client_options) as client:
        dataset = Dataset.open(root, storage_options, create=True)
        sleep = client_options.get("sleep", time.sleep)
        with dataset.lock(lock_timeout, sleep=sleep):
            with export_errors(dataset.show(dataset.path)):
                listing = dataset.sweep(Listing.scan(dataset))
            key = next_snapshot_key(listing, datetime.now(UTC))
            plan = _plan(client, selected, all_services, default_service, key)
            settings = _Settings(
                dataset=dataset,
                snapshot=key,
                listing=listing,
                keep=keep,
                page_size=page_size,
                max_pages=max_pages,
                invalid_attributes=invalid_attributes,
                client_options=shared_limit(client_options, max_workers),
            )
            services = _run_jobs(plan, settings, max_workers)
    return SnapshotRun(os.fspath(root), key, tuple(services))


def read_snapshot(
    root: str | os.PathLike[str],
    service_sid: str | None = None,
    snapshot: str = "latest",
    *,
    dtype_backend: DtypeBackend = "numpy_nullable",
    storage_options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Read a published snapshot back to the frame :func:`load_users` returns.

    Only snapshots with a manifest are read, and their file is checked
    against the size and SHA-256 the manifest records.

    Args:
        root: The dataset folder or fsspec URL.
        service_sid: The service; may be left out when the dataset has one.
        snapshot: ``"latest"``, ``"previous"`` (the one before the latest)
            or a key such as ``"2026-12-04T020000Z"``.
        dtype_backend: ``"numpy_nullable"`` or ``"pyarrow"`` column dtypes.
        storage_options: Options of the fsspec filesystem.

    Returns:
        The users, with the provenance of the load and ``"snapshot"`` (its
        key) in ``DataFrame.attrs``.

    Raises:
        SnapshotError: No such published snapshot, or a file that is not
            the one published.
        ConfigurationError: ``snapshot`` is not a key, or the service is not
            named and the dataset holds several.
    """
    check_dtype_backend(dtype_backend)
    dataset = Dataset.open(root, storage_options)
    with read_errors(dataset.show(dataset.path)):
        listing = Listing.scan(dataset)
    sid = _pick_service(listing, service_sid, dataset)
    key = _pick_snapshot(listing, sid, snapshot, dataset)
    (entry,) = dataset.read_manifest(sid, key)["files"]
    data = dataset.read_file(sid, key, entry)
    try:
        frame = read_users_file(io.BytesIO(data), dtype_backend=dtype_backend)
    except (ConfigurationError, SchemaError, pa.ArrowException) as error:
        raise SnapshotError(
            f"{dataset.show(dataset.snapshot_dir(sid, key))}/{entry['path']} is not "
            f"a users export: {error}"
        ) from error
    # The partition names the service even when the load could not (an empty
    # default service, read through /v1/Users, has no user to name it).
    frame.attrs["service_sid"] = sid
    frame.attrs["snapshot"] = key
    return frame


def read_parquet(
    path: str | os.PathLike[str] | BinaryIO,
    *,
    service_sid: str | None = None,
    snapshot: str = "latest",
    dtype_backend: DtypeBackend = "numpy_nullable",
    storage_options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Read an export or a snapshot back to the frame :func:`load_users` returned.

    ``path`` (local, or an fsspec URL such as ``s3://bucket/users``) may name:

    - a Parquet file written by an export (or an open binary file);
    - a snapshot folder (``.../service_sid=IS.../snapshot=2026-12-04T020000Z``);
    - a service folder (``.../service_sid=IS...``): its ``snapshot``;
    - a dataset root: the ``snapshot`` of ``service_sid``, which may be left
      out when the dataset holds one service.

    Snapshots are read as :func:`read_snapshot` reads them: published ones
    only, checked against their manifest.

    Args:
        path: What to read, as above.
        service_sid: The service, for a dataset root holding several.
        snapshot: ``"latest"``, ``"previous"`` or a key, for a dataset root
            or a service folder.
        dtype_backend: ``"numpy_nullable"`` or ``"pyarrow"`` column dtypes.
        storage_options: Options of the fsspec filesystem.

    Returns:
        The users, with the provenance of the load in ``DataFrame.attrs``
        (and ``"snapshot"``, its key, when a snapshot was read).

    Raises:
        ConfigurationError: A file that is not a users export, or a
            ``service_sid`` or ``snapshot`` that contradicts the folder named.
        SnapshotError: Nothing is at ``path``, or no such published snapshot.

    Example:
        >>> conv_frames.read_parquet("data/users")  # doctest: +SKIP
    """
    check_dtype_backend(dtype_backend)
    if not isinstance(path, str | os.PathLike):
        return read_users_file(path, dtype_backend=dtype_backend)
    place = Dataset.resolve(path, storage_options)
    shown = place.show(place.path)
    with read_errors(shown):
        if place.fs.isfile(place.path):
            _refuse_selection(shown, service_sid, snapshot)
            if place.local:
                return read_users_file(place.path, dtype_backend=dtype_backend)
            with place.fs.open(place.path, "rb") as handle:
                return read_users_file(handle, dtype_backend=dtype_backend)
    root, sid, key = place.locate()
    return read_snapshot(
        root,
        _agree(shown, "service_sid", service_sid, sid, None),
        _agree(shown, "snapshot", snapshot, key, "latest") or snapshot,
        dtype_backend=dtype_backend,
        storage_options=storage_options,
    )


def _refuse_selection(shown: str, service_sid: str | None, snapshot: str) -> None:
    if service_sid is not None or snapshot != "latest":
        raise ConfigurationError(
            f"{shown} is a file, which holds one export: service_sid and snapshot "
            "choose within a dataset; pass the dataset root to choose"
        )


def _agree(
    shown: str, name: str, given: str | None, named: str | None, default: str | None
) -> str | None:
    """The folder's own service or key; one given that differs is refused."""
    if named is None:
        return given
    if given not in (default, named):
        raise ConfigurationError(
            f"{shown} is the folder of {name} {named}, and {name}={given!r} was "
            "asked for; pass the dataset root to choose another"
        )
    return named


#: The columns of :func:`list_snapshots` and their dtypes.
_LISTING_DTYPES = {
    "service_sid": "string",
    "snapshot": "string",
    "rows": "Int64",
    "started_at": "datetime64[us, UTC]",
    "ended_at": "datetime64[us, UTC]",
    "path": "string",
}


def list_snapshots(
    root: str | os.PathLike[str],
    service_sid: str | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """List the published snapshots of a dataset, oldest first per service.

    Returns:
        One row per snapshot: ``service_sid``, ``snapshot`` (its key),
        ``rows``, ``started_at`` and ``ended_at`` (UTC) and ``path``.
    """
    dataset = Dataset.open(root, storage_options)
    with read_errors(dataset.show(dataset.path)):
        listing = Listing.scan(dataset)
    services = listing.services()
    if service_sid is not None:
        services = [check_service_sid(service_sid)]
    rows = []
    for sid in services:
        for key in listing.published(sid):
            manifest = dataset.read_manifest(sid, key)
            rows.append(
                {
                    "service_sid": sid,
                    "snapshot": key,
                    "rows": manifest["rows"],
                    "started_at": manifest["started_at"],
                    "ended_at": manifest["ended_at"],
                    "path": dataset.show(dataset.snapshot_dir(sid, key)),
                }
            )
    frame = pd.DataFrame(rows, columns=list(_LISTING_DTYPES))
    return frame.astype(_LISTING_DTYPES)


def describe_column_changes(
    before: Mapping[str, str], after: Mapping[str, str]
) -> list[str]:
    """Name the columns added (``+``), removed (``-``) and retyped (``~``).

    Args:
        before: Column types by name, such as a manifest's ``columns``.
        after: The same, later.
    """
    changes = [
        f"+{name} ({kind})" for name, kind in after.items() if name not in before
    ]
    changes += [
        f"-{name} ({kind})" for name, kind in before.items() if name not in after
    ]
    changes += [
        f"~{name} ({before[name]} -> {kind})"
        for name, kind in after.items()
        if name in before and before[name] != kind
    ]
    return changes


# --- selecting services -------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    service_sid: str
    default: bool  # read through /v1/Users, as the account's default service

    @property
    def source(self) -> str:
        if self.default:
            return DEFAULT_SERVICE_SOURCE
        return f"/v1/Services/{self.service_sid}/Users"


@dataclass(frozen=True)
class _Settings:
    dataset: Dataset
    snapshot: str
    listing: Listing
    keep: int | None
    page_size: int
    max_pages: int | None
    invalid_attributes: InvalidAttributes
    client_options: Mapping[str, Any]
    #: Set when the run is abandoned (Ctrl-C, SIGTERM): loads stop, requests on
    #: the wire end, and nothing more is published or pruned.
    cancelled: CancelEvent = dataclasses.field(default_factory=CancelEvent)


def _check_selection(
    service_sids: Sequence[str], all_services: bool, default_service: bool
) -> list[str]:
    if isinstance(service_sids, str):
        service_sids = [service_sids]
    if not service_sids and not all_services and not default_service:
        raise ConfigurationError(
            "no service selected: name services, or ask for all_services or "
            "default_service (--service, --all-services, --default-service)"
        )
    return list(dict.fromkeys(check_service_sid(sid) for sid in service_sids))


def _check_settings(
    keep: int | None,
    max_workers: int,
    lock_timeout: float | None,
    page_size: int,
    max_pages: int | None,
    invalid_attributes: InvalidAttributes,
) -> None:
    """Refuse bad settings before the lock is taken or a request sent."""
    check_page_size(page_size)
    check_max_pages(max_pages)
    check_invalid_attributes(invalid_attributes)
    check_max_workers(max_workers)
    if lock_timeout is not None:
        check_seconds(
            lock_timeout,
            "lock_timeout",
            ", or None to wait as long as the other run takes",
        )
    if keep is not None:
        check_count(keep, "keep", " (snapshots kept per service), or None")


def _plan(
    client: Client,
    selected: list[str],
    all_services: bool,
    default_service: bool,
    key: str,
) -> list[_Job | ServiceSnapshot]:
    """Resolve the selection to jobs; a lookup that fails is a failed entry."""
    plan: list[_Job | ServiceSnapshot] = [_Job(sid, False) for sid in selected]
    chosen = set(selected)
    if all_services:
        try:
            listed = _listed_services(client)
        except ConvFramesError as error:
            plan.append(ServiceSnapshot(None, "/v1/Services", key, error=error))
        else:
            plan += [_Job(sid, False) for sid in listed if sid not in chosen]
            chosen.update(listed)

    if default_service:
        try:
            sid = client.default_service_sid()
        except ConvFramesError as error:
            plan.append(ServiceSnapshot(None, CONFIGURATION_SOURCE, key, error=error))
        else:
            if sid in chosen:
                logger.info("the default service %s is selected already", sid)
            else:
                plan.append(_Job(sid, True))
    if not plan:
        logger.warning("GET /v1/Services lists no services: nothing to export")
    return plan


def _listed_services(client: Client) -> list[str]:
    sids = []
    for record in client.list_services():
        sid = record.get("sid")
        try:
            sids.append(check_service_sid(sid))
        except ConfigurationError:
            raise SchemaError(
                f"GET /v1/Services listed a service whose sid is {sid!r}"
            ) from None
    return list(dict.fromkeys(sids))


# --- exporting one service ----------------------------------------------------


def _run_jobs(
    plan: list[_Job | ServiceSnapshot], settings: _Settings, max_workers: int
) -> list[ServiceSnapshot]:
    workers = max(1, min(max_workers, sum(isinstance(i, _Job) for i in plan)))
    with ThreadPoolExecutor(workers, thread_name_prefix="conv-frames") as pool:
        pending = [
            pool.submit(_export_service, item, settings)
            if isinstance(item, _Job)
            else item
            for item in plan
        ]
        try:
            return [
                item if isinstance(item, ServiceSnapshot) else item.result()
                for item in pending
            ]
        except BaseException:
            # Ctrl-C or SIGTERM reaches only this thread: stop the others'
            # loads, start no more, and let the pool wait for them to unwind.
            settings.cancelled.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _export_service(job: _Job, settings: _Settings) -> ServiceSnapshot:
    """Export one service; a failure is returned in the entry, not raised."""
    clock = time.perf_counter()
    entry = ServiceSnapshot(job.service_sid, job.source, settings.snapshot)
    try:
        path, manifest = _write_snapshot(job, settings)
    except ConvFramesError as error:
        return dataclasses.replace(
            entry, error=error, seconds=time.perf_counter() - clock
        )
    except Exception as error:
        # A bug or a foreign error must not take the other services down; its
        # traceback goes to the log and the entry carries it as the cause.
        logger.exception("unexpected error while exporting %s", job.service_sid)
        failure = ConvFramesError(f"unexpected {type(error).__name__}: {error}")
        failure.__cause__ = error
        return dataclasses.replace(
            entry, error=failure, seconds=time.perf_counter() - clock
        )

    logger.info("published %s (%d users)", path, manifest["rows"])
    if settings.keep is not None and not settings.cancelled.is_set():
        _apply_retention(settings, job.service_sid, settings.keep)
    return dataclasses.replace(
        entry, path=path, manifest=manifest, seconds=time.perf_counter() - clock
    )


def _write_snapshot(job: _Job, settings: _Settings) -> tuple[str, dict[str, Any]]:
    started = datetime.now(UTC)
    dataset = settings.dataset
    _refuse_later_keys(job, settings)
    label = f"{settings.snapshot}-{job.service_sid}"
    with Client(**settings.client_options) as client, dataset.staging(label) as stage:
        part = stage / PART_NAME
        attrs = client.export_users(
            None if job.default else job.service_sid,
            part,
            page_size=settings.page_size,
            max_pages=settings.max_pages,
            invalid_attributes=settings.invalid_attributes,
            cancel=settings.cancelled,
        )
        if settings.cancelled.is_set():
            raise ExportError(f"the run was stopped before {job.source} was published")
        _check_partition(part, job.service_sid)
        manifest = _manifest(job, settings, attrs, started, part)
        path = dataset.publish(
            stage, job.service_sid, settings.snapshot, dump_manifest(manifest)
        )
    return path, manifest


def _refuse_later_keys(job: _Job, settings: _Settings) -> None:
    """Refuse a service whose snapshots run ahead of this run's key.

    Its new snapshot would not be its latest, and every reader takes the
    greatest key as the latest; the key of the run stays its start time.
    """
    later = keys_after(settings.listing, job.service_sid, settings.snapshot)
    if later:
        dataset = settings.dataset
        raise ExportError(
            f"{dataset.show(dataset.service_dir(job.service_sid))} holds snapshot="
            f"{later[-1]}, later than this run's start ({settings.snapshot}), so a "
            "new snapshot would not be its latest; check the clocks of the hosts "
            "that export here (NTP), then rename or remove that folder. Nothing "
            "was exported for this service"
        )


def _check_partition(part: Path, service_sid: str) -> None:
    """Refuse users of another service: a partition holds one service."""
    found: set[str | None] = set()
    for batch in pq.ParquetFile(part).iter_batches(columns=["chat_service_sid"]):
        found.update(pc.unique(batch.column(0)).to_pylist())
    strays = sorted(str(sid) for sid in found - {service_sid})
    if strays:
        raise SchemaError(
            f"the users listed for service {service_sid} include users whose "
            f"chat_service_sid is {', '.join(strays[:3])}; nothing was published"
        )


def _apply_retention(settings: _Settings, service_sid: str, keep: int) -> None:
    dataset = settings.dataset
    keys = [*settings.listing.published(service_sid), settings.snapshot]
    for key in keys[:-keep]:
        try:
            dataset.remove(service_sid, key)
        except storage_errors() as error:
            logger.warning(
                "could not remove %s (keep=%d): %s",
                dataset.show(dataset.snapshot_dir(service_sid, key)),
                keep,
                error,
            )
        else:
            logger.info("removed snapshot %s of %s (keep=%d)", key, service_sid, keep)


def _manifest(
    job: _Job,
    settings: _Settings,
    attrs: Mapping[str, Any],
    started: datetime,
    part: Path,
) -> dict[str, Any]:
    columns = {column.name: str(column.type) for column in pq.read_schema(part)}
    previous, changes = _column_changes(settings, job.service_sid, columns)
    return {
        "format": MANIFEST_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "conv_frames_version": attrs["conv_frames_version"],
        "service_sid": job.service_sid,
        "account_sid": attrs["account_sid"],
        "snapshot": settings.snapshot,
        "api_host": attrs["api_host"],
        "source": job.source,
        "started_at": started.isoformat(),
        "ended_at": datetime.now(UTC).isoformat(),
        "rows": attrs["rows"],
        "pages": attrs["pages"],
        "requests": attrs["requests"],
        "retries": attrs["retries"],
        "duplicate_sids": attrs["duplicate_sids"],
        "invalid_attributes": attrs["invalid_attributes"],
        "columns": columns,
        "previous_snapshot": previous,
        "column_changes": changes,
        "files": [describe_file(part)],
    }


def _column_changes(
    settings: _Settings, service_sid: str, columns: dict[str, str]
) -> tuple[str | None, list[str]]:
    """Compare the columns with the previous snapshot's; warn if they changed."""
    published = settings.listing.published(service_sid)
    if not published:
        return None, []
    previous = published[-1]
    try:
        before = settings.dataset.read_manifest(service_sid, previous)["columns"]
    except (SnapshotError, KeyError) as error:
        logger.warning("cannot compare columns with snapshot %s: %s", previous, error)
        return previous, []
    changes = describe_column_changes(before, columns)
    if changes:
        logger.warning(
            "the columns of service %s changed since snapshot %s: %s",
            service_sid,
            previous,
            "; ".join(changes),
        )
    return previous, changes


# --- picking a snapshot to read -----------------------------------------------


def _pick_service(listing: Listing, service_sid: str | None, dataset: Dataset) -> str:
    services = listing.services()
    shown = dataset.show(dataset.path)
    root, sid, key = dataset.locate()
    if not services and sid is not None:
        folder = f"snapshot {key} of service {sid}" if key else f"service {sid}"
        raise ConfigurationError(
            f"{shown} is the folder of {folder} inside a dataset; pass the "
            f"dataset root, {root}"
        )
    if not services:
        raise ConfigurationError(
            f"{shown} holds no service_sid=IS... folders, so it is not a "
            "conv-frames dataset root; pass the folder given to "
            "conv-frames export --dataset"
        )
    if service_sid is not None:
        return check_service_sid(service_sid)
    if len(services) != 1:
        more = ", ..." if len(services) > 5 else ""
        raise ConfigurationError(
            f"{shown} holds {len(services)} services "
            f"({', '.join(services[:5])}{more}); name the one to read"
        )
    return services[0]


def _pick_snapshot(
    listing: Listing, service_sid: str, snapshot: str, dataset: Dataset
) -> str:
    keys = listing.published(service_sid)
    if snapshot == "latest":
        found = keys[-1:]
    elif snapshot == "previous":
        found = keys[-2:-1]
    elif is_snapshot_key(snapshot):
        found = [snapshot] if snapshot in keys else []
    else:
        raise ConfigurationError(
            f"snapshot={snapshot!r} is neither 'latest', 'previous' nor a key such "
            "as '2026-12-04T020000Z'"
        )
    if not found:
        raise SnapshotError(
            f"{dataset.show(dataset.service_dir(service_sid))} has no published "
            f"snapshot {snapshot!r} ({len(keys)} published; newest: "
            f"{', '.join(keys[-3:]) or 'none'})"
        )
    return found[0]
