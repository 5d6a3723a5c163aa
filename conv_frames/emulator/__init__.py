"""A local emulator of the Twilio Conversations v1 API, for tests and demos.

It serves seeded users over HTTP on 127.0.0.1 with the API's paging, auth,
errors and presence, plus request-rate limits and injectable faults::

    from conv_frames.emulator import Emulator, FaultPlan

    with Emulator(users=1234, faults=FaultPlan.parse("rate=0.1,seed=3")) as emu:
        ...  # point a client at emu.base_url with emu.account_sid/auth_token

Modules: ``_data`` (seeded records), ``_pages`` (paging and the page cache),
``_api`` (routes and auth), ``_faults`` (fault plans), ``_limits`` (rate and
concurrency limits), ``_server`` (the HTTP layer), ``_emulator`` (lifecycle).
"""

from ._data import make_users
from ._emulator import Emulator
from ._faults import FAULT_KINDS, Fault, FaultPlan
from ._server import LoggedRequest

__all__ = [
    "FAULT_KINDS",
    "Emulator",
    "Fault",
    "FaultPlan",
    "LoggedRequest",
    "make_users",
]
