"""Parquet export and read-back, published atomically.

A file is written beside its destination under a hidden temporary name and
renamed over it only once complete, so readers and earlier exports never see
a partial file. The frame's ``attrs`` (provenance) travel in the file's
key-value metadata.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ._errors import ConfigurationError, ExportError
from ._frame import (
    check_dtype_backend,
    decode_attribute_text,
    table_to_frame,
    unify_tables,
)
from ._schema import ATTRIBUTES, USERS_SCHEMA, DtypeBackend

__all__ = [
    "ATTRS_KEY",
    "ParquetSink",
    "atomic_path",
    "read_users_file",
    "write_table",
]

#: Users per Parquet row group. pyarrow's writer keeps some 28 KB per row group
#: until the file closes, so a group per 50-user page would grow with the service;
#: groups this size keep the writer's memory flat and the file compact.
ROW_GROUP_ROWS = 16_384

#: Key of the file metadata entry that holds the frame's attrs as JSON.
ATTRS_KEY = b"conv_frames.attrs"


def write_table(
    table: pa.Table, path: str | os.PathLike[str], attrs: Mapping[str, Any]
) -> Path:
    """Write ``table`` to ``path`` atomically, with ``attrs`` in the metadata.

    Raises:
        ExportError: The folder is missing or unwritable, or the disk is full;
            any earlier file at ``path`` is left as it was.
    """
    with ParquetSink(path) as sink:
        sink.write(table)
        sink.publish(attrs)
    return Path(path)


class ParquetSink:
    """Stream page tables into one Parquet file, published whole or not at all.

    The file grows under a hidden temporary name beside ``path`` and replaces
    ``path`` only in :meth:`publish`; leaving the ``with`` block without
    publishing (an error, a failed load) removes it and leaves ``path`` as it
    was. Memory stays at about one page.

    Rows wait in memory until ``row_group_rows`` have come, and are written
    as one row group of exactly that many (see :data:`ROW_GROUP_ROWS`); only
    the file's last group is smaller.

    A page whose columns differ from what was written (an unknown field that
    appears late, attributes that turned to plain text in lenient mode) makes
    the sink rewrite the file so far under the widened schema: a rare path that
    holds the written rows in memory once.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, row_group_rows: int | None = None
    ) -> None:
        self.path = destination(path)
        self.rows = 0
        self._publisher = atomic_path(self.path)
        self._temporary = self._publisher.__enter__()
        self._writer: pq.ParquetWriter | None = None
        self._done = False
        self._row_group_rows = row_group_rows or ROW_GROUP_ROWS
        self._pending: list[pa.Table] = []

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._done:
            self._done = True
            if self._writer is not None:
                with contextlib.suppress(Exception):
                    self._writer.close()
            # Thrown into atomic_path, which then removes the file.
            self._publisher.__exit__(_Aborted, _Aborted(), None)

    def write(self, table: pa.Table) -> None:
        """Append a table of users (a page or several)."""
        self._pending.append(table)
        self.rows += table.num_rows
        waiting = sum(pending.num_rows for pending in self._pending)
        if waiting >= self._row_group_rows:
            self._flush(last=False)

    def _flush(self, *, last: bool) -> None:
        """Write the waiting rows as full row groups; the remainder too if ``last``."""
        if not self._pending:
            return
        tables, self._pending = self._pending, []
        table = tables[0]
        if len(tables) > 1:
            table = pa.concat_tables(unify_tables(tables), promote_options="permissive")
        if not last:
            whole = table.num_rows // self._row_group_rows * self._row_group_rows
            if whole < table.num_rows:
                self._pending.append(table.slice(whole))
            table = table.slice(0, whole)
        with _export_errors(self.path):
            writer = self._writer or self._open(table.schema)
            if not table.schema.equals(writer.schema, check_metadata=False):
                table, writer = self._widen(writer, table)
            writer.write_table(table, row_group_size=self._row_group_rows)

    def publish(self, attrs: Mapping[str, Any]) -> Path:
        """Finish the file with ``attrs`` in its metadata and move it into place."""
        self._flush(last=True)
        with _export_errors(self.path):
            writer = self._writer or self._open(USERS_SCHEMA)
            metadata = orjson.dumps(dict(attrs), default=str)
            writer.add_key_value_metadata({ATTRS_KEY: metadata})
            writer.close()
        self._done = True
        self._publisher.__exit__(None, None, None)  # fsync and rename, or raise
        return self.path

    def _open(self, schema: pa.Schema) -> pq.ParquetWriter:
        self._writer = pq.ParquetWriter(self._temporary, schema.remove_metadata())
        return self._writer

    def _widen(
        self, writer: pq.ParquetWriter, table: pa.Table
    ) -> tuple[pa.Table, pq.ParquetWriter]:
        writer.close()
        written, table = unify_tables([pq.read_table(self._temporary), table])
        schema = pa.unify_schemas(
            [written.schema, table.schema], promote_options="permissive"
        )
        writer = self._open(schema)
        writer.write_table(_conform(written, writer.schema))
        return _conform(table, writer.schema), writer


class _Aborted(Exception):
    """Thrown into atomic_path so that it removes the file instead of publishing."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; publish it there on success.

    On any failure the temporary file is removed and ``path`` is untouched.
    """
    final = destination(path)
    temporary = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with _export_errors(final):
            yield temporary
            _fsync(temporary)
            os.replace(temporary, final)
    finally:
        # The temporary file may never have existed (a missing folder, a name
        # too long); that must not hide the ExportError being raised.
        with contextlib.suppress(OSError):
            temporary.unlink()


def destination(path: str | os.PathLike[str]) -> Path:
    """Check an output path and return where the file will really be published.

    A symbolic link is followed, so the file it points to is replaced and the
    link kept. Anything that exists there and is not a regular file (a folder,
    a device such as /dev/null) is refused rather than replaced.

    Raises:
        ConfigurationError: The path cannot name a file.
        ExportError: Something other than a regular file is in the way.
    """
    try:
        final = Path(os.fsdecode(os.fspath(path)))
        if "\0" in str(final) or final.name in ("", ".", ".."):
            raise ValueError("it names no file")
    except (TypeError, ValueError) as error:
        raise ConfigurationError(
            f"the Parquet path {path!r} is not a file path ({error}); give a path "
            "such as data/users.parquet"
        ) from None
    if final.is_symlink():
        final = final.resolve()
    if final.exists() and not final.is_file():
        raise ExportError(
            f"{final} exists and is not a regular file (a folder or a device); "
            "refusing to replace it, choose another path"
        )
    return final


def read_users_file(
    path: str | os.PathLike[str] | BinaryIO,
    *,
    dtype_backend: DtypeBackend = "numpy_nullable",
) -> pd.DataFrame:
    """Read one exported Parquet file back to the frame :func:`load_users` returned.

    The dtypes, the decoded ``attributes`` and ``df.attrs`` are restored.
    ``path`` may also be an open binary file (an fsspec file, ``BytesIO``).
    :func:`conv_frames.read_parquet` also reads snapshots of a dataset.

    Raises:
        ConfigurationError: ``dtype_backend`` is not a known backend, or the
            file is not Parquet, or not a conv_frames users export.
        FileNotFoundError: There is no file at ``path``.
    """
    check_dtype_backend(dtype_backend)
    try:
        file = pq.ParquetFile(path)
        table = file.read()
    except (pa.ArrowInvalid, OSError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise ConfigurationError(
            f"{path} is not a readable Parquet file: {error}"
        ) from None
    missing = [name for name in USERS_SCHEMA.names if name not in table.column_names]
    if missing:
        raise ConfigurationError(
            f"{path} is not a users export: it lacks columns {missing}"
        )
    table = _cast_to_schema(table)
    frame = table_to_frame(
        table,
        decode_attribute_text(table[ATTRIBUTES]),
        dtype_backend=dtype_backend,
    )
    frame.attrs.update(_stored_attrs(file, path))
    return frame


def _stored_attrs(file: pq.ParquetFile, path: object) -> dict[str, Any]:
    raw = (file.metadata.metadata or {}).get(ATTRS_KEY)
    try:
        attrs = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        attrs = None
    if not isinstance(attrs, dict):
        raise ConfigurationError(
            f"{path} has a {ATTRS_KEY.decode()} metadata entry that is not a JSON "
            "object; the file was changed by another tool"
        )
    return attrs


def _cast_to_schema(table: pa.Table) -> pa.Table:
    """Give the known columns their schema types, should a writer have widened them.

    ``attributes`` is left as stored (JSON, or plain text when a lenient load
    kept text that is not JSON); its values are decoded separately.
    """
    for index, name in enumerate(table.column_names):
        if name in USERS_SCHEMA.names and name != ATTRIBUTES:
            wanted = USERS_SCHEMA.field(name).type
            if table.column(index).type != wanted:
                table = table.set_column(index, name, table.column(index).cast(wanted))
    return table


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Give ``table`` exactly ``schema``'s columns: cast, or null where absent."""
    columns = [
        table.column(field.name).cast(field.type)
        if field.name in table.column_names
        else pa.nulls(table.num_rows, field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


@contextlib.contextmanager
def _export_errors(final: Path) -> Iterator[None]:
    """Translate OS errors while exporting into an ExportError naming ``final``."""
    try:
        yield
    except OSError as error:
        raise ExportError(
            f"could not write {final}: {error.strerror or error}; "
            "check that the folder exists, is writable and has space "
            "(any earlier file there is untouched)"
        ) from error


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
