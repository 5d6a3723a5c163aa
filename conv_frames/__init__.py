"""conv_frames: the users of a Twilio Conversations service as a typed DataFrame.

>>> import conv_frames
>>> frame = conv_frames.load_users("IS...")  # doctest: +SKIP

Credentials come from arguments or the ``TWILIO_*`` environment variables; the
bundled emulator (:mod:`conv_frames.emulator`) serves the same API locally.
"""

from ._client import DEFAULT_TIMEOUT, Client, export_users, iter_user_pages, load_users
from ._errors import (
    APIError,
    ConfigurationError,
    ConvFramesError,
    ExportError,
    PaginationError,
    RequestTimeout,
    SchemaError,
    TransportError,
)
from ._frame import users_frame
from ._pages import Page
from ._parquet import read_parquet
from ._schema import USERS_SCHEMA

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TIMEOUT",
    "USERS_SCHEMA",
    "APIError",
    "Client",
    "ConfigurationError",
    "ConvFramesError",
    "ExportError",
    "Page",
    "PaginationError",
    "RequestTimeout",
    "SchemaError",
    "TransportError",
    "__version__",
    "export_users",
    "iter_user_pages",
    "load_users",
    "read_parquet",
    "users_frame",
]
