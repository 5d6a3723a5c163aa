"""The snapshot dataset on storage: layout, lock, atomic publish, manifests.

A dataset root, local or an fsspec URL such as ``s3://bucket/users``, holds::

    ROOT/
      .conv-frames.lock                     held for a whole run (see below)
      .staging/                             files being written, hidden from globs
      service_sid=IS.../
        snapshot=2026-12-04T020000Z/
          part-0.parquet                    the users, in USERS_SCHEMA
          _manifest.json                    written last: the commit marker

A snapshot is published whole or not at all. On a local disk it is written
in a hidden staging folder, its manifest last, and the folder is renamed into
place in one step. Object stores have no rename: the data file is written in
a local folder (under the user's cache folder, see :func:`sweep_cached_staging`),
uploaded under ``.staging/``, copied into place on the server, and the
manifest written last. A reader's glob can therefore see a data file without
its manifest only for the time of one server-side copy; a snapshot without a
manifest is incomplete, every reader here ignores it, and the next run
removes it along with anything left in ``.staging/``. Readers that glob the
files themselves should match ``service_sid=*/snapshot=*/*.parquet`` (which
skips ``.staging``) and, on an object store, keep only the snapshots that
have a manifest (see the README).

Runs on one root never interleave. On a local disk a run holds an OS-level
lock on ``.conv-frames.lock``, which the OS releases when a crashed run's
process ends. On an object store ``.conv-frames.lock`` is a lease object that
runs on any host take turns on (see :mod:`conv_frames._lease`); a crashed
run's lease lapses after ``LEASE_SECONDS`` (two minutes).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import filelock
import orjson
import pyarrow.parquet as pq

# fsspec ships no type information; the calls made on it here are tested.
from fsspec.core import split_protocol, url_to_fs  # type: ignore[import-untyped]
from fsspec.implementations.local import (  # type: ignore[import-untyped]
    LocalFileSystem,
)

from ._errors import (
    ConfigurationError,
    DatasetLockedError,
    ExportError,
    SnapshotError,
    describe_storage_error,
    storage_errors,
)
from ._lease import Holder, Lease, S3Object

__all__ = [
    "MANIFEST_NAME",
    "PART_NAME",
    "SCHEMA_VERSION",
    "Dataset",
    "Listing",
    "describe_file",
    "dump_manifest",
    "export_errors",
    "is_snapshot_key",
    "keys_after",
    "next_snapshot_key",
    "read_errors",
    "sweep_cached_staging",
]

logger = logging.getLogger(__name__)

#: Version of the snapshot layout and its users schema, written in every
#: manifest. Raise it when a reader of the old layout would misread the new.
SCHEMA_VERSION = 1
#: The commit marker of a snapshot, written after its data files.
MANIFEST_NAME = "_manifest.json"
#: The one data file of a snapshot.
PART_NAME = "part-0.parquet"
LOCK_NAME = ".conv-frames.lock"
STAGING_NAME = ".staging"
#: The folder of the user's cache where snapshots for object stores are staged.
STAGING_FOLDER = "staging"
MANIFEST_FORMAT = "conv_frames.snapshot"

#: Snapshot keys are UTC times to the second, without colons (which Hadoop
#: paths and Windows refuse), so that their order is the order they happened.
_KEY_FORMAT = "%Y-%m-%dT%H%M%SZ"
_KEY = re.compile(r"\d{4}-\d{2}-\d{2}T\d{6}Z")
_SERVICE_DIR = re.compile(r"service_sid=(IS[0-9a-fA-F]{32})")
_CHUNK = 1 << 20
#: How far ahead of the clock a key may be: runs within one second take the
#: next seconds, and hosts' clocks (kept by NTP) may differ by a little.
FUTURE_SLACK = timedelta(minutes=10)
_EXISTS = "a snapshot with this key exists, and snapshots are never replaced"


class Dataset:
    """A dataset root on one filesystem, with the layout's paths.

    Attributes:
        url: The root as the caller gave it.
        fs: The fsspec filesystem.
        path: The root in the filesystem's terms, without a trailing slash.
        local: Whether it is a local disk (publish by rename) or an object
            store (publish by upload and server-side copy, manifest last).
    """

    def __init__(self, url: str, fs: Any, path: str) -> None:
        self.url = url
        self.fs = fs
        self.path = path.rstrip("/")
        self.local = isinstance(fs, LocalFileSystem)
        self._lease: Lease | None = None  # held on an object store, during a run

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str],
        storage_options: Mapping[str, Any] | None = None,
        *,
        create: bool = False,
    ) -> Dataset:
        """Resolve ``root`` to its filesystem and check that it can be a dataset.

        Args:
            root: A folder or an fsspec URL.
            storage_options: Options of the fsspec filesystem.
            create: Open to write: a local root is created if its parent
                folder exists. Otherwise the root must exist, to be read.

        Raises:
            ConfigurationError: An unknown protocol, a missing fsspec backend,
                a root that is a file, or (with ``create``) a local root whose
                parent is missing.
            SnapshotError: Without ``create``, nothing is at the root.
        """
        if create:
            _refuse_unlockable_store(os.fspath(root))
        dataset = cls.resolve(root, storage_options)
        if create:
            dataset._check_root_to_write()
        else:
            dataset._check_root_to_read()
        return dataset

    @classmethod
    def resolve(
        cls,
        root: str | os.PathLike[str],
        storage_options: Mapping[str, Any] | None = None,
    ) -> Dataset:
        """Resolve ``root`` to its filesystem, without looking at what is there.

        Raises:
            ConfigurationError: An empty root, an object-store URL without a
                bucket, an unknown protocol or a missing fsspec backend.
        """
        url = os.fspath(root)
        if not isinstance(url, str) or not url.strip():
            # An unset $ROOT in a crontab must not write into the working folder.
            raise ConfigurationError(
                f"the dataset root {root!r} is empty; give a folder or a URL such as "
                "s3://bucket/users"
            )
        try:
            fs, path = url_to_fs(url, **dict(storage_options or {}))
        except ImportError as error:
            raise ConfigurationError(
                f"cannot open {url!r}: {error} (for S3: pip install 'conv-frames[s3]')"
            ) from error
        except ValueError as error:
            raise ConfigurationError(f"cannot open {url!r}: {error}") from error
        dataset = cls(url, fs, path)
        if not dataset.local and not dataset.path:
            raise ConfigurationError(
                f"{url!r} names no bucket: name a bucket, as in s3://BUCKET/PREFIX"
            )
        return dataset

    def locate(self) -> tuple[str, str | None, str | None]:
        """Where the root sits in a dataset's layout, from its name alone.

        Returns:
            ``(root, service_sid, key)``: for a snapshot folder, the dataset
            root above it (as :meth:`show` spells it), its service and key;
            for a service folder, the root and the service; otherwise this
            root and two Nones.
        """
        parent, _, name = self.path.rpartition("/")
        if name.startswith("snapshot=") and is_snapshot_key(name[9:]):
            root, _, service = parent.rpartition("/")
            match = _SERVICE_DIR.fullmatch(service)
            if match is not None and root:
                return self.show(root), match.group(1), name[9:]
        match = _SERVICE_DIR.fullmatch(name)
        if match is not None and parent:
            return self.show(parent), match.group(1), None
        return self.show(self.path), None, None

    def _check_root_to_write(self) -> None:
        with export_errors(self.show(self.path)):
            self._refuse_a_file(self.path)
            if not self.local:
                return  # prefixes need no creating; the lock finds a missing bucket
            folder = Path(self.path)
            self._refuse_a_file(str(folder.parent))
            if not folder.parent.is_dir():
                raise ConfigurationError(
                    f"the folder above the dataset root {self.path!r} does not "
                    "exist; create it first"
                )
            folder.mkdir(exist_ok=True)

    def _check_root_to_read(self) -> None:
        shown = self.show(self.path)
        with read_errors(shown):
            self._refuse_a_file(self.path)
            found = bool(self.fs.isdir(self.path))
        if not found:
            raise SnapshotError(
                f"no dataset at {shown}: nothing is there. Check the path (and the "
                "storage options of an object store), or export to it first "
                f"(conv-frames export --dataset {shown} ...)"
            )

    def _refuse_a_file(self, path: str) -> None:
        if self.fs.isfile(path):
            raise ConfigurationError(
                f"{self.show(path)} is a file, not a folder; pass a folder for the "
                "dataset"
            )

    def join(self, *parts: str) -> str:
        """A path under the root."""
        return "/".join([self.path, *parts])

    def service_dir(self, service_sid: str) -> str:
        """The partition of one service."""
        return self.join(f"service_sid={service_sid}")

    def snapshot_dir(self, service_sid: str, key: str) -> str:
        """The folder of one snapshot."""
        return self.join(f"service_sid={service_sid}", f"snapshot={key}")

    def show(self, path: str) -> str:
        """The path as a user would type it: a local path, or a URL."""
        return path if self.local else str(self.fs.unstrip_protocol(path))

    @contextlib.contextmanager
    def lock(
        self, timeout: float | None, *, sleep: Callable[[float], None] = time.sleep
    ) -> Iterator[None]:
        """Hold the dataset's lock for a run.

        A local root is locked by the OS, which releases the lock when the
        process ends however it ends. An object-store root is locked by a
        lease object that the runs of every host honour; a crashed run's
        lease lapses (see :mod:`conv_frames._lease`).

        Args:
            timeout: Seconds to wait for another run; 0 tries once, None
                waits as long as it takes.
            sleep: The wait between looks at another run's lease (tests
                record it); a local lock waits in the OS.

        Raises:
            DatasetLockedError: Another run held it for ``timeout`` seconds.
            ConfigurationError: An object store that cannot be locked, or a
                bucket that does not exist.
            ExportError: The lock could not be written.
        """
        if self.local:
            with self._file_lock(timeout):
                yield
            return
        lease = self._acquire_lease(timeout, sleep)
        self._lease = lease
        try:
            yield
        finally:
            self._lease = None
            lease.release()

    @contextlib.contextmanager
    def _file_lock(self, timeout: float | None) -> Iterator[None]:
        path = self.join(LOCK_NAME)
        lock = filelock.FileLock(
            path,
            thread_local=False,
            fallback_to_soft=False,  # a soft lock would outlive a crashed run
            preserve_lock_file=True,
        )
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except filelock.Timeout:
            raise DatasetLockedError(
                f"another conv-frames run is writing to {self.show(self.path)} "
                f"({_local_holder(path)}); nothing was exported. Let it finish, or "
                "wait for it with lock_timeout (--wait SECONDS)"
            ) from None
        except OSError as error:
            raise ExportError(f"could not lock {path}: {error}") from error
        try:
            _write_local_holder(path, Holder.this_process(datetime.now(UTC)))
            yield
        finally:
            _write_local_holder(path, None)
            lock.release()

    def _acquire_lease(
        self, timeout: float | None, sleep: Callable[[float], None]
    ) -> Lease:
        shown = self.show(self.path)
        store = S3Object(self.fs, self.join(LOCK_NAME), shown)
        try:
            return Lease.acquire(store, shown, timeout, sleep=sleep)
        except FileNotFoundError as error:
            raise ConfigurationError(
                f"cannot lock {shown}: {error}; check the bucket's name, or create "
                "the bucket first"
            ) from error
        except storage_errors() as error:
            raise ExportError(
                f"could not lock {shown}: {describe_storage_error(error)}; nothing "
                "was exported"
            ) from error

    def renew_lock(self) -> None:
        """Make sure the run still holds the lock, just before a commit.

        Raises:
            DatasetLockedError: An object-store lease was taken over.
        """
        if self._lease is not None:
            self._lease.renew()

    @contextlib.contextmanager
    def staging(self, label: str) -> Iterator[Path]:
        """Yield an empty local folder to write a snapshot in; remove it after.

        On a local root it is in ``.staging``, so that it can be renamed into
        place. For an object store it is under the user's cache folder, with
        an OS lock held beside it for the run, so that the next run can tell
        the folders of a killed run and remove them (:func:`sweep_cached_staging`).
        """
        if not self.local:
            with _cached_staging(self.show(self.path), label) as folder:
                yield folder
            return
        with export_errors(self.show(self.join(STAGING_NAME))):
            base = Path(self.join(STAGING_NAME))
            base.mkdir(exist_ok=True)
            # mkdir, not mkdtemp: the folder becomes the snapshot, so it
            # needs the usual permissions rather than owner-only ones.
            folder = base / f"{label}-{uuid.uuid4().hex[:12]}"
            folder.mkdir()
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)  # gone once published here

    def publish(
        self, staging: Path, service_sid: str, key: str, manifest: bytes
    ) -> str:
        """Put a complete staged snapshot in place, its manifest last.

        Returns:
            Where it was published, as :meth:`show` spells it.

        Raises:
            ExportError: It could not be written, or the key is taken; no
                part of it is visible.
            DatasetLockedError: The run lost its lock; nothing is visible.
        """
        final = self.snapshot_dir(service_sid, key)
        with export_errors(self.show(final)):
            if self.local:
                self._publish_by_rename(staging, final, manifest)
            else:
                self._publish_by_copy(staging, final, manifest)
        return self.show(final)

    def _publish_by_rename(self, staging: Path, final: str, manifest: bytes) -> None:
        _write_synced(staging / MANIFEST_NAME, manifest)
        _fsync_folder(staging)
        target = Path(final)
        target.parent.mkdir(exist_ok=True)
        if target.exists():
            raise FileExistsError(17, _EXISTS)
        os.rename(staging, target)  # one atomic step within a filesystem
        _fsync_folder(target.parent)

    def _publish_by_copy(self, staging: Path, final: str, manifest: bytes) -> None:
        """Upload under ``.staging/``, copy into place, then write the manifest.

        Globs skip ``.staging/``, so a data file shows in the layout only for
        the time of a server-side copy before its manifest follows.
        """
        if self.fs.exists(f"{final}/{MANIFEST_NAME}"):
            raise FileExistsError(17, _EXISTS)
        staged = self.join(STAGING_NAME, staging.name)
        placed: list[str] = []
        try:
            for name in self._upload(staging, staged):
                placed.append(f"{final}/{name}")
                self.fs.copy(f"{staged}/{name}", placed[-1])
            self.renew_lock()
            self.fs.pipe_file(f"{final}/{MANIFEST_NAME}", manifest, mode="create")
        except BaseException:
            # Without a manifest the files are invisible to our readers;
            # remove them now rather than leave them to the next run's sweep.
            with contextlib.suppress(Exception):
                self.fs.rm(placed)
            raise
        finally:
            with contextlib.suppress(Exception):
                self.fs.rm(staged, recursive=True)

    def _upload(self, staging: Path, staged: str) -> list[str]:
        """Upload the staged data files; return their names."""
        names = []
        for local in sorted(staging.glob("*.parquet")):
            remote = f"{staged}/{local.name}"
            self.fs.put_file(str(local), remote)
            if int(self.fs.info(remote)["size"]) != local.stat().st_size:
                raise OSError(f"{self.show(remote)} did not arrive whole")
            names.append(local.name)
        return names

    def remove(self, service_sid: str, key: str) -> None:
        """Delete a snapshot so that no reader sees part of it."""
        folder = self.snapshot_dir(service_sid, key)
        if self.local:
            # Out of the layout in one rename, then deleted at leisure.
            trash = Path(self.join(STAGING_NAME, f"deleted-{uuid.uuid4().hex[:12]}"))
            trash.parent.mkdir(exist_ok=True)
            os.rename(folder, trash)
            shutil.rmtree(trash)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(f"{folder}/{MANIFEST_NAME}")
            self.fs.rm(folder, recursive=True)

    def sweep(self, listing: Listing) -> Listing:
        """Remove what interrupted runs left behind; hold the lock to call it.

        Returns:
            The listing without the removed snapshots.
        """
        self._sweep_staging(listing)
        # A local snapshot is renamed into place with its manifest, so one without
        # (copied in by hand, or by rsync) is unfinished there too; under the lock
        # no run of ours is writing it. Readers' globs would trip on its files.
        for service_sid, key in listing.incomplete():
            folder = self.snapshot_dir(service_sid, key)
            logger.warning(
                "removing %s: it has no manifest, so the run that wrote it stopped "
                "before publishing it",
                self.show(folder),
            )
            with export_errors(self.show(folder)):
                self.fs.rm(folder, recursive=True)
            del listing.files[(service_sid, key)]
        return listing

    def _sweep_staging(self, listing: Listing) -> None:
        if self.local:
            staging = Path(self.join(STAGING_NAME))
            for leftover in sorted(staging.glob("*")) if staging.is_dir() else []:
                logger.info("removing %s, left by an earlier run", leftover)
                shutil.rmtree(leftover, ignore_errors=True)
            return
        sweep_cached_staging()  # only runs on object stores stage in the cache
        if listing.staged:
            logger.info(
                "removing %d files under %s, left by an earlier run",
                len(listing.staged),
                self.show(self.join(STAGING_NAME)),
            )
            with export_errors(self.show(self.join(STAGING_NAME))):
                self.fs.rm([self.join(name) for name in listing.staged])
            listing.staged.clear()

    def read_manifest(self, service_sid: str, key: str) -> dict[str, Any]:
        """Read and check one snapshot's manifest.

        Raises:
            SnapshotError: It is missing, unreadable, from a newer layout, or
                written for another folder (one copied or renamed by hand).
        """
        path = f"{self.snapshot_dir(service_sid, key)}/{MANIFEST_NAME}"
        shown = self.show(path)
        try:
            with read_errors(shown):
                manifest = orjson.loads(self.fs.cat_file(path))
        except orjson.JSONDecodeError as error:
            raise SnapshotError(f"cannot read {shown}: {error}") from error
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise SnapshotError(f"{shown} is not a conv_frames snapshot manifest")
        version = manifest.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise SnapshotError(
                f"{shown} has schema_version {version!r}, and this conv_frames reads "
                f"up to {SCHEMA_VERSION}: upgrade conv_frames to read it"
            )
        files = manifest.get("files")
        if not isinstance(files, list) or len(files) != 1:
            raise SnapshotError(f"{shown} should list exactly one data file")
        written = (manifest.get("service_sid"), manifest.get("snapshot"))
        if written != (service_sid, key):
            # A folder copied or renamed by hand: its data is another snapshot's.
            raise SnapshotError(
                f"{shown} belongs to snapshot {written[1]!r} of {written[0]!r}, not "
                f"to the folder it is in: the folder was copied or renamed by hand; "
                "move it back or remove it"
            )
        return manifest

    def read_file(self, service_sid: str, key: str, entry: Mapping[str, Any]) -> bytes:
        """Read a data file of a snapshot, checked against its manifest entry.

        Raises:
            SnapshotError: It is missing, or its size or SHA-256 differs.
        """
        path = f"{self.snapshot_dir(service_sid, key)}/{entry['path']}"
        shown = self.show(path)
        with read_errors(shown):
            data: bytes = self.fs.cat_file(path)
        problem = None
        if len(data) != entry["bytes"]:
            problem = f"it has {len(data)} bytes, the manifest says {entry['bytes']}"
        elif hashlib.sha256(data).hexdigest() != entry["sha256"]:
            problem = "its SHA-256 differs from the manifest's"
        if problem:
            raise SnapshotError(
                f"{shown} is not the file that was published: {problem}"
            )
        return data


@dataclass
class Listing:
    """The snapshot folders of a dataset and the files in each.

    Attributes:
        files: File names by ``(service_sid, key)``.
        staged: Files under ``.staging/``, relative to the root.
    """

    files: dict[tuple[str, str], set[str]]
    staged: list[str] = field(default_factory=list)

    @classmethod
    def scan(cls, dataset: Dataset) -> Listing:
        """List the dataset once: one recursive listing on an object store."""
        dataset.fs.invalidate_cache(dataset.path)
        try:
            paths: list[str] = list(dataset.fs.find(dataset.path))
        except FileNotFoundError:
            paths = []
        files: dict[tuple[str, str], set[str]] = {}
        staged = []
        strays: set[str] = set()
        for path in paths:
            relative = path[len(dataset.path) + 1 :]
            parts = relative.split("/")
            if parts[0] == STAGING_NAME:
                staged.append(relative)
            if len(parts) != 3:
                continue
            service = _SERVICE_DIR.fullmatch(parts[0])
            if service is None or not parts[1].startswith("snapshot="):
                continue
            key = parts[1].removeprefix("snapshot=")
            if not is_snapshot_key(key):
                strays.add("/".join(parts[:2]))
                continue
            files.setdefault((service.group(1), key), set()).add(parts[2])
        for stray in sorted(strays):
            # Not ours (copied or named by hand): never read, pruned or removed.
            logger.warning(
                "ignoring %s: its name is not a snapshot key such as "
                "snapshot=2026-12-04T020000Z (a UTC time); rename or remove it",
                dataset.show(dataset.join(stray)),
            )
        return cls(files, staged)

    def services(self) -> list[str]:
        """Services with a snapshot folder, published or not, sorted."""
        return sorted({service_sid for service_sid, _ in self.files})

    def published(self, service_sid: str) -> list[str]:
        """Keys of the service's snapshots that have a manifest, oldest first."""
        return sorted(
            key
            for (sid, key), names in self.files.items()
            if sid == service_sid and MANIFEST_NAME in names
        )

    def incomplete(self) -> list[tuple[str, str]]:
        """``(service_sid, key)`` of snapshot folders without a manifest."""
        return sorted(
            where for where, names in self.files.items() if MANIFEST_NAME not in names
        )


#: Protocols a dataset can be written to: a local disk, or S3 (the lease needs
#: its conditional writes). Any fsspec protocol can be read.
_WRITABLE_PROTOCOLS = frozenset({None, "file", "local", "s3", "s3a"})


def _refuse_unlockable_store(url: object) -> None:
    """Refuse to write where runs could not take turns, before opening anything."""
    protocol = split_protocol(url)[0] if isinstance(url, str) else None
    if protocol not in _WRITABLE_PROTOCOLS:
        raise ConfigurationError(
            f"cannot write snapshots to {url!r}: runs take turns on an object store "
            "through a lease written with conditional writes, which conv-frames "
            "does on S3 only; export to an s3:// root or a local folder (reading "
            f"{protocol}:// works with its fsspec package installed)"
        )


def next_snapshot_key(listing: Listing, now: datetime) -> str:
    """Key of a run starting ``now``: its UTC second, after every existing key.

    Runs that start within one second take the following seconds, so a key
    may run a little ahead of the clock. A key further ahead than
    ``FUTURE_SLACK`` was not written by a run on a clock that agrees with
    this one (a skewed host, a folder made by hand): it is left out here
    with a WARNING, so that keys stay run start times, and the services that
    hold one are refused (see :func:`keys_after`).
    """
    key = now.strftime(_KEY_FORMAT)
    horizon = (now + FUTURE_SLACK).strftime(_KEY_FORMAT)
    future = sorted({k for _, k in listing.files if k > horizon})
    if future:
        logger.warning(
            "snapshot keys later than this host's clock (%s): %s; check the clocks "
            "of the hosts that export here (NTP), and rename or remove those "
            "folders: their services are not exported until then",
            key,
            ", ".join(future[:5]),
        )
    newest = max((k for _, k in listing.files if k <= horizon), default=None)
    if newest is not None and newest >= key:
        after = _parse_key(newest) + timedelta(seconds=1)
        key = after.strftime(_KEY_FORMAT)
    return key


def keys_after(listing: Listing, service_sid: str, key: str) -> list[str]:
    """The service's keys (published or not) that are not before ``key``."""
    return sorted(k for sid, k in listing.files if sid == service_sid and k >= key)


def is_snapshot_key(text: str) -> bool:
    """Whether ``text`` is a key: a real UTC second (``2026-12-04T020000Z``)."""
    if _KEY.fullmatch(text) is None:
        return False
    try:
        _parse_key(text)
    except ValueError:  # 2026-13-45T999999Z is spelled like one, but is no time
        return False
    return True


def _parse_key(key: str) -> datetime:
    return datetime.strptime(key, _KEY_FORMAT)


def describe_file(path: Path) -> dict[str, Any]:
    """A manifest entry for a data file: name, rows, bytes and SHA-256."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return {
        "path": path.name,
        "rows": pq.ParquetFile(path).metadata.num_rows,
        "bytes": path.stat().st_size,
        "sha256": digest.hexdigest(),
    }


def dump_manifest(manifest: Mapping[str, Any]) -> bytes:
    """The manifest as the JSON text that is written."""
    return orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n"


@contextlib.contextmanager
def export_errors(where: str) -> Iterator[None]:
    """Turn storage errors while writing the dataset into an ExportError."""
    try:
        yield
    except storage_errors() as error:
        raise ExportError(
            f"could not write {where}: {describe_storage_error(error)}; published "
            "snapshots are untouched"
        ) from error


@contextlib.contextmanager
def read_errors(where: str) -> Iterator[None]:
    """Turn storage errors while reading the dataset into a SnapshotError."""
    try:
        yield
    except storage_errors() as error:
        raise SnapshotError(
            f"cannot read {where}: {describe_storage_error(error)}"
        ) from error


def sweep_cached_staging() -> None:
    """Remove the local staging folders that killed object-store runs left.

    Each run stages a snapshot for an object store in
    ``~/.cache/conv_frames/staging/<root>/<name>``, and holds an OS lock on
    ``<name>.lock`` beside it while it runs. The OS releases that lock when
    the process ends, however it ends: a folder whose lock can be taken
    belongs to no live run. The folders of runs still going are left alone,
    whichever root they write to.
    """
    base = _cache_folder() / STAGING_FOLDER
    for guard_path in sorted(base.glob("*/*.lock")):
        guard = _staging_guard(guard_path)
        try:
            guard.acquire(timeout=0)
        except (filelock.Timeout, OSError):
            continue  # its run is still going
        try:
            folder = guard_path.with_suffix("")
            if folder.exists():
                logger.info("removing %s, left by a run that was killed", folder)
                shutil.rmtree(folder, ignore_errors=True)
        finally:
            guard.release()
            with contextlib.suppress(OSError):
                guard_path.unlink()
    for folder in sorted(base.glob("*/*")):
        if folder.is_dir() and not folder.with_suffix(".lock").exists():
            shutil.rmtree(folder, ignore_errors=True)  # its lock is gone already


@contextlib.contextmanager
def _cached_staging(root: str, label: str) -> Iterator[Path]:
    """A local folder to stage a snapshot of ``root`` in, locked while in use."""
    digest = hashlib.sha256(root.encode()).hexdigest()[:24]
    folder = _cache_folder() / STAGING_FOLDER / digest / f"{label}-{uuid.uuid4().hex}"
    guard = _staging_guard(folder.with_suffix(".lock"))
    with export_errors(str(folder)):
        folder.parent.mkdir(parents=True, exist_ok=True)
        guard.acquire(timeout=0)  # a new name: only a sweep could hold it
        folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        guard.release()
        with contextlib.suppress(OSError):
            Path(guard.lock_file).unlink()


def _staging_guard(path: Path) -> filelock.BaseFileLock:
    return filelock.FileLock(
        path, thread_local=False, fallback_to_soft=False, preserve_lock_file=True
    )


def _cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "conv_frames"


def _write_local_holder(path: str, holder: Holder | None) -> None:
    """Name the run in the lock file it holds, for the runs it turns away.

    Written only once the OS lock is held: a run that fails to take the lock
    opens the file but never writes it. Emptied before the lock is released.
    """
    body = b"" if holder is None else holder.dump(holder.acquired_at)
    with contextlib.suppress(OSError), open(path, "r+b") as handle:
        handle.write(body)
        handle.truncate()


def _local_holder(path: str) -> str:
    """Who holds a local lock, as its lock file says."""
    try:
        holder = Holder.parse(Path(path).read_bytes())
    except OSError:
        holder = None
    if holder is None:
        return f"it holds {path}"
    return f"{holder.describe()}, which holds {path}"


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_folder(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
