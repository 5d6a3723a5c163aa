"""conv_frames: the users of a Twilio Conversations service as a typed DataFrame.

>>> import conv_frames
>>> frame = conv_frames.load_users("IS...")  # doctest: +SKIP

Credentials come from arguments or the ``TWILIO_*`` environment variables; the
bundled emulator (:mod:`conv_frames.emulator`) serves the same API locally.
"""

from ._analysis import flatten_attributes, presence_summary
from ._client import DEFAULT_TIMEOUT, Client, export_users, iter_user_pages, load_users
from ._diff import UsersDiff, diff_snapshots, diff_users
from ._errors import (
    APIError,
    ConfigurationError,
    ConvFramesError,
    DatasetLockedError,
    ExportError,
    PaginationError,
    RequestTimeout,
    SchemaError,
    ServicesLoadError,
    SnapshotError,
    TransportError,
)
from ._frame import users_frame
from ._pages import Page
from ._presence import fill_presence
from ._progress import ProgressEvent
from ._schema import USERS_SCHEMA
from ._services import load_services
from ._snapshots import (
    ServiceSnapshot,
    SnapshotRun,
    export_snapshots,
    list_snapshots,
    read_parquet,
    read_snapshot,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TIMEOUT",
    "USERS_SCHEMA",
    "APIError",
    "Client",
    "ConfigurationError",
    "ConvFramesError",
    "DatasetLockedError",
    "ExportError",
    "Page",
    "PaginationError",
    "ProgressEvent",
    "RequestTimeout",
    "SchemaError",
    "ServiceSnapshot",
    "ServicesLoadError",
    "SnapshotError",
    "SnapshotRun",
    "TransportError",
    "UsersDiff",
    "__version__",
    "diff_snapshots",
    "diff_users",
    "export_snapshots",
    "export_users",
    "fill_presence",
    "flatten_attributes",
    "iter_user_pages",
    "list_snapshots",
    "load_services",
    "load_users",
    "presence_summary",
    "read_parquet",
    "read_snapshot",
    "users_frame",
]
