"""The lock of an object-store dataset root: a lease object that hosts share.

An object store has no file locks, so runs on several hosts take turns
through one small object in the root, ``.conv-frames.lock``. It is created
with a create-only write (S3 ``If-None-Match: *``): of two runs that race,
the store lets exactly one write it. The object says who holds the lease and
until when::

    {"format": "conv_frames.lock", "owner": "<uuid4>", "host": "...", "pid": 4242,
     "acquired_at": "...", "renewed_at": "...", "expires_at": "..."}

While a run lasts, a thread renews the lease every :data:`RENEW_SECONDS`
with a write conditional on the object's ETag (``If-Match``), and the run
renews it once more just before it commits each snapshot. A run that
crashes stops renewing, so its lease expires after :data:`LEASE_SECONDS`;
the next run takes it over with the same ETag-conditional write, which only
one taker can win. A run whose lease was taken over (it stalled past its
expiry) finds out at its next renewal and publishes nothing more.

Expiry is read against this host's clock, so the hosts' clocks must agree
to well within :data:`LEASE_SECONDS` (NTP does). Stores that ignore
conditional writes would let two runs hold the lease at once: acquiring
checks that the store refuses a second create and a stale ETag, and raises
an error if it does not, rather than lock loosely.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ._errors import (
    ConfigurationError,
    DatasetLockedError,
    ExportError,
    storage_errors,
)

__all__ = ["LEASE_SECONDS", "RENEW_SECONDS", "Holder", "Lease", "S3Object"]

logger = logging.getLogger(__name__)

#: How long a lease lasts unless renewed: how long a crashed run blocks the next.
LEASE_SECONDS = 120.0
#: How often a running export renews its lease; three renewals may fail in a row.
RENEW_SECONDS = 30.0
#: Longest pause between two looks at a lease held by another run.
POLL_SECONDS = 1.0
LEASE_FORMAT = "conv_frames.lock"

#: What S3 answers when a conditional write loses: 412, or 409 when two
#: conditional writes of one key are in flight at once.
_LOST_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
_LOST_STATUSES = frozenset({409, 412})
#: What a store answers when it does not implement conditional writes.
_UNSUPPORTED_CODES = frozenset({"NotImplemented", "501"})
#: An ETag no object has: a write conditional on it must be refused.
_NO_SUCH_ETAG = '"00000000000000000000000000000000"'

Sleep = Callable[[float], None]


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, and until when.

    Attributes:
        owner: A random ID of one acquisition; it tells a run its own lease.
        host: The holder's host name.
        pid: The holder's process ID on that host.
        acquired_at: When it took the lease (UTC).
        expires_at: When the lease lapses unless renewed (UTC).
    """

    owner: str
    host: str
    pid: int
    acquired_at: datetime
    expires_at: datetime

    @classmethod
    def this_process(cls, now: datetime) -> Holder:
        """A new holder: this host and process, from ``now``."""
        return cls(
            owner=uuid.uuid4().hex,
            host=socket.gethostname(),
            pid=os.getpid(),
            acquired_at=now,
            expires_at=now + timedelta(seconds=LEASE_SECONDS),
        )

    @classmethod
    def parse(cls, body: bytes) -> Holder | None:
        """Read a lease object; None if it is not one conv-frames wrote."""
        try:
            fields = orjson.loads(body)
            if fields.get("format") != LEASE_FORMAT:
                return None
            return cls(
                owner=str(fields["owner"]),
                host=str(fields["host"]),
                pid=int(fields["pid"]),
                acquired_at=datetime.fromisoformat(fields["acquired_at"]),
                expires_at=datetime.fromisoformat(fields["expires_at"]),
            )
        except (AttributeError, KeyError, TypeError, ValueError):
            return None  # not JSON, not an object, or a field that does not parse

    def renewed(self, now: datetime) -> Holder:
        """The same holder, its lease running :data:`LEASE_SECONDS` from ``now``."""
        return replace(self, expires_at=now + timedelta(seconds=LEASE_SECONDS))

    def is_expired(self, now: datetime) -> bool:
        """Whether the lease has lapsed at ``now``, or its holder is known dead.

        A holder on this host whose process is gone (killed, crashed) cannot
        renew: its lease is taken over at once rather than after it lapses.
        Only this host can tell; another host's holder is judged by the time.
        """
        return now >= self.expires_at or self._died_here()

    def _died_here(self) -> bool:
        if self.host != socket.gethostname() or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            return True
        except OSError:
            return False  # it exists, under another user
        return False

    def dump(self, now: datetime) -> bytes:
        """The lease object's body, written at ``now``."""
        return orjson.dumps(
            {
                "format": LEASE_FORMAT,
                "owner": self.owner,
                "host": self.host,
                "pid": self.pid,
                "acquired_at": self.acquired_at.isoformat(),
                "renewed_at": now.isoformat(),
                "expires_at": self.expires_at.isoformat(),
            }
        )

    def describe(self) -> str:
        """``pid 4242 on host-a since 2026-12-04T02:00:00Z``."""
        return f"pid {self.pid} on {self.host} since {_utc(self.acquired_at)}"


class S3Object:
    """One S3 object written only with conditional writes, through s3fs.

    Each write returns the new ETag, or None when its condition failed (the
    object exists, or is no longer the version named).

    Raises:
        ConfigurationError: ``fs`` is not S3: no other store is supported.
    """

    def __init__(self, fs: Any, path: str, shown: str) -> None:
        if "s3" not in _protocols(fs):
            raise ConfigurationError(
                f"cannot lock {shown}: runs on an object store take turns through "
                "a lease written with conditional writes, which conv-frames does on "
                "S3 only; export to an s3:// root or a local folder"
            )
        self.fs = fs
        self.path = path
        self.shown = str(fs.unstrip_protocol(path))
        self.bucket, self.key, _ = fs.split_path(path)

    def create(self, body: bytes) -> str | None:
        """Write ``body`` only if no object is there (``If-None-Match: *``)."""
        return self._put(body, IfNoneMatch="*")

    def replace(self, body: bytes, etag: str) -> str | None:
        """Write ``body`` only over the version ``etag`` (``If-Match``)."""
        try:
            return self._put(body, IfMatch=etag)
        except FileNotFoundError:  # deleted meanwhile: nothing to replace
            return None

    def read(self) -> tuple[bytes, str] | None:
        """The body and its ETag, or None if there is no object.

        The ETag is read first, so the body is that version or a newer one: a
        replace conditional on it fails if the body read is not that version.
        """
        try:
            head = self.fs.call_s3("head_object", Bucket=self.bucket, Key=self.key)
            body: bytes = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        return body, str(head["ETag"])

    def delete(self, etag: str) -> bool:
        """Delete the object if it is still the version ``etag``."""
        try:
            self.fs.call_s3(
                "delete_object", Bucket=self.bucket, Key=self.key, IfMatch=etag
            )
        except FileNotFoundError:
            return False
        except OSError as error:
            if _lost(error):
                return False
            raise
        finally:
            self.fs.invalidate_cache(self.path)
        return True

    def _put(self, body: bytes, **condition: str) -> str | None:
        try:
            answer = self.fs.call_s3(
                "put_object", Bucket=self.bucket, Key=self.key, Body=body, **condition
            )
        except OSError as error:
            if _lost(error):
                return None
            if _error_code(error) in _UNSUPPORTED_CODES:
                raise ExportError(
                    f"cannot lock {self.shown}: the object store refused a "
                    f"conditional write ({error}); conv-frames needs create-only "
                    "and ETag-conditional writes to lock an object-store root. Use "
                    "a store that has them (Amazon S3 does), or a local folder"
                ) from error
            raise
        finally:
            self.fs.invalidate_cache(self.path)
        return str(answer["ETag"])


class Lease:
    """A held lease; :meth:`acquire` takes one, :meth:`release` gives it back."""

    def __init__(self, store: S3Object, holder: Holder, etag: str, root: str) -> None:
        self._store = store
        self._holder = holder
        self._etag = etag
        self._root = root
        self._lost = False
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._renewer = threading.Thread(
            target=self._renew_until_released, name="conv-frames-lease", daemon=True
        )

    @classmethod
    def acquire(
        cls,
        store: S3Object,
        root: str,
        timeout: float | None,
        *,
        sleep: Sleep = time.sleep,
    ) -> Lease:
        """Take the lease of ``root``, waiting up to ``timeout`` seconds.

        Args:
            store: The lease object.
            root: The dataset root, as messages show it.
            timeout: Seconds to wait for a live lease; 0 looks once, None
                waits as long as it takes.
            sleep: The wait between two looks (tests record it).

        Raises:
            DatasetLockedError: Another run held it for ``timeout`` seconds,
                or the object there is not a lease.
            ExportError: The store does not honour conditional writes.
            OSError: The store could not be reached or written.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        owner = Holder.this_process(_now())
        while True:
            attempt = _try_to_take(store, owner, root)
            if isinstance(attempt, tuple):
                break
            holder = attempt
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise _locked(root, holder)
            if holder is not None:
                pause = min(POLL_SECONDS, (holder.expires_at - _now()).total_seconds())
                sleep(max(0.0, pause if left is None else min(pause, left)))
        lease = cls(store, *attempt, root)
        try:
            lease._check_conditions_are_honoured()
        except BaseException:
            with contextlib.suppress(OSError):  # ours since a moment: no condition
                store.fs.rm_file(store.path)
            raise
        lease._renewer.start()
        return lease

    def renew(self) -> None:
        """Extend the lease by :data:`LEASE_SECONDS` from now.

        Raises:
            DatasetLockedError: Another run took it over; publish nothing more.
            OSError: The store could not be reached.
        """
        with self._mutex:
            if self._lost:
                raise self._taken_over()
            now = _now()
            holder = self._holder.renewed(now)
            etag = self._store.replace(holder.dump(now), self._etag)
            if etag is None:
                self._lost = True
                raise self._taken_over()
            self._holder, self._etag = holder, etag

    def release(self) -> None:
        """Stop renewing and delete the lease object, if it is still ours."""
        self._stop.set()
        if self._renewer.is_alive():
            self._renewer.join()
        with self._mutex:
            if self._lost:
                return
            try:
                if not self._store.delete(self._etag):
                    logger.warning("the lock on %s was no longer ours", self._root)
            except storage_errors() as error:
                logger.warning(
                    "could not remove the lock on %s (it lapses within %d s): %s",
                    self._root,
                    LEASE_SECONDS,
                    error,
                )

    def _renew_until_released(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            try:
                self.renew()
            except DatasetLockedError as error:
                logger.error("%s", error)
                return
            except storage_errors() as error:
                logger.warning(
                    "could not renew the lock on %s, trying again in %d s: %s",
                    self._root,
                    RENEW_SECONDS,
                    error,
                )

    def _check_conditions_are_honoured(self) -> None:
        """Refuse a store that ignores conditional writes: it cannot lock."""
        now = _now()
        body = self._holder.dump(now)
        ignored = []
        if self._store.create(body) is not None:
            ignored.append("a create-only write (If-None-Match: *)")
        if self._store.replace(body, _NO_SUCH_ETAG) is not None:
            ignored.append("a write conditional on an ETag (If-Match)")
        if not ignored:
            return
        raise ExportError(
            f"cannot lock {self._root}: its object store accepted "
            f"{' and '.join(ignored)} that it should have refused, so two runs "
            "could both hold the lock; nothing was exported. Use a store that "
            "honours conditional writes (Amazon S3 does), or a local folder"
        )

    def _taken_over(self) -> DatasetLockedError:
        seen = None
        with contextlib.suppress(OSError):
            seen = self._store.read()
        holder = None if seen is None else Holder.parse(seen[0])
        by = f"by {holder.describe()}" if holder else "by another run"
        return DatasetLockedError(
            f"the lock on {self._root} was taken over {by} after this run's lease "
            f"lapsed (it was not renewed for {LEASE_SECONDS:.0f} s); this run "
            "publishes nothing more"
        )


def _try_to_take(
    store: S3Object, owner: Holder, root: str
) -> tuple[Holder, str] | Holder | None:
    """One attempt: create the lease, or take over a lapsed one.

    Returns:
        The lease written and its ETag if it is ours now; else the holder
        seen, or None if the lease went away meanwhile.
    """
    now = _now()
    mine = replace(owner, acquired_at=now).renewed(now)
    etag = store.create(mine.dump(now))
    if etag is not None:
        return mine, etag
    seen = store.read()
    if seen is None:
        return None  # released meanwhile: try again
    body, seen_etag = seen
    holder = Holder.parse(body)
    if holder is None:
        raise DatasetLockedError(
            f"{store.shown} is not a conv-frames lock, so nothing was exported to "
            f"{root}; if no conv-frames run is writing there, delete that object"
        )
    if holder.owner == owner.owner:
        return holder, seen_etag  # our own create, retried after it had landed
    if not holder.is_expired(now):
        return holder
    etag = store.replace(mine.dump(now), seen_etag)
    if etag is None:
        return holder  # another run took it over first
    logger.warning(
        "took over the lock on %s from %s: its lease lapsed at %s, or its process "
        "is gone from this host (that run was killed, or stopped renewing)",
        root,
        holder.describe(),
        _utc(holder.expires_at),
    )
    return mine, etag


def _locked(root: str, holder: Holder | None) -> DatasetLockedError:
    who = (
        f"{holder.describe()}, its lease renewed until {_utc(holder.expires_at)}"
        if holder is not None
        else "another run holds its lock"
    )
    return DatasetLockedError(
        f"another conv-frames run is writing to {root} ({who}); nothing was "
        "exported. Let it finish, or wait for it with lock_timeout (--wait SECONDS)"
    )


def _lost(error: OSError) -> bool:
    """Whether ``error`` is a conditional write or delete that lost."""
    if isinstance(error, FileExistsError):
        return True
    status = _response(error).get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _error_code(error) in _LOST_CODES or status in _LOST_STATUSES


def _error_code(error: OSError) -> str | None:
    """The S3 error code s3fs translated into ``error``, if any."""
    code = _response(error).get("Error", {}).get("Code")
    return None if code is None else str(code)


def _response(error: OSError) -> Mapping[str, Any]:
    response = getattr(error.__cause__, "response", None)
    return response if isinstance(response, Mapping) else {}


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = getattr(fs, "protocol", ())
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
