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
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ._errors import ExportError, SchemaError
from ._frame import decode_attribute_text, table_to_frame
from ._schema import ATTRIBUTES, JSON_TEXT, USERS_SCHEMA, DtypeBackend

__all__ = ["ATTRS_KEY", "atomic_path", "read_parquet", "write_table"]

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
    metadata = dict(table.schema.metadata or {})
    metadata[ATTRS_KEY] = orjson.dumps(dict(attrs), default=str)
    table = table.replace_schema_metadata(metadata)
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)
    return Path(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; publish it there on success.

    On any failure the temporary file is removed and ``path`` is untouched.
    """
    final = Path(path)
    temporary = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, final)
    except OSError as error:
        raise ExportError(
            f"could not write {final}: {error.strerror or error}; "
            "check that the folder exists, is writable and has space "
            "(any earlier file there is untouched)"
        ) from error
    finally:
        # NotADirectoryError: the destination's parent is a file, so the
        # temporary file never existed; don't let it hide the ExportError.
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            temporary.unlink()


def read_parquet(
    path: str | os.PathLike[str], *, dtype_backend: DtypeBackend = "numpy_nullable"
) -> pd.DataFrame:
    """Read an export back to the DataFrame :func:`load_users` returned.

    The dtypes, the decoded ``attributes`` and ``df.attrs`` are restored.

    Raises:
        SchemaError: The file is not a conv_frames users export.
    """
    table = pq.read_table(path)
    missing = [name for name in USERS_SCHEMA.names if name not in table.column_names]
    if missing:
        raise SchemaError(f"{path} is not a users export: it lacks columns {missing}")
    table = _cast_to_schema(table)
    frame = table_to_frame(
        table.replace_schema_metadata(None),
        decode_attribute_text(table[ATTRIBUTES]),
        dtype_backend=dtype_backend,
    )
    raw = (table.schema.metadata or {}).get(ATTRS_KEY)
    frame.attrs.update(orjson.loads(raw) if raw else {})
    return frame


def _cast_to_schema(table: pa.Table) -> pa.Table:
    """Give the known columns their schema types (JSON text may read back as string)."""
    for index, name in enumerate(table.column_names):
        if name in USERS_SCHEMA.names:
            wanted = USERS_SCHEMA.field(name).type
            column = table.column(index)
            if column.type != wanted:
                if wanted == JSON_TEXT:
                    column = pa.chunked_array(
                        [
                            pa.ExtensionArray.from_storage(
                                JSON_TEXT, c.cast(pa.string())
                            )
                            for c in column.chunks
                        ],
                        type=JSON_TEXT,
                    )
                else:
                    column = column.cast(wanted)
                table = table.set_column(index, name, column)
    return table


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
