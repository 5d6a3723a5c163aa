"""The emulator's seeded dataset: credentials, services and users.

Everything here is a pure function of a seed, so two emulators built with the
same seed serve byte-identical records. Users are built from small pools of
pre-made strings (names, attribute documents, date parts) picked with one
random draw per field group; that keeps 300,000 users within a couple of
seconds and lets most records share their string objects.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import hashlib
import json
import random
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Credentials",
    "UserFactory",
    "collector_paused",
    "derive_credentials",
    "derive_sid",
    "make_services",
    "make_users",
    "presence_of",
]

Record = dict[str, Any]

_FIRST_NAMES = (
    "Ana", "José", "Zoë", "Björn", "Łukasz", "Søren", "Amélie", "Chloé",
    "François", "Nguyễn", "Ahmed", "Олег", "Aiko", "Priya", "Ngozi", "Mateo",
    "Siobhán", "Noah", "Fatima", "Dmitri", "Ines", "Kwame", "Lucía", "Oğuz",
    "Mia", "Yusuf", "Élodie", "Rahul", "Sofía", "Jürgen", "Hana", "Liam",
)  # fmt: skip
_LAST_NAMES = (
    "García", "Müller", "Nowak", "O'Brien", "Dubois", "Øvergård", "Smith",
    "Kowalski", "Silva", "Hernández", "Johansson", "Novák", "Rossi", "Öztürk",
    "Okafor", "Tanaka", "Kim", "Singh", "Petrov", "Costa", "Nielsen", "Brown",
)  # fmt: skip
_CJK_NAMES = (
    "李伟", "王芳", "张敏", "刘洋", "陈静", "佐藤花子", "田中太郎", "鈴木一郎",
    "김민준", "이서연", "박지훈", "高橋美咲",
)  # fmt: skip
_EMOJI = ("🚀", "🌸", "👋", "🎧", "☕", "🦊", "✨", "🐙")
_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com")

_TEAMS = ("Support", "Sales", "Billing", "Onboarding", "Trust & Safety", "Équipe")
_REGIONS = ("emea", "amer", "apac", "latam")
_PLANS = ("free", "pro", "enterprise")
_TAGS = ("vip", "beta", "churn-risk", "nps:9", "新客户", "🔥", "partner", "trial")
_LOCALES = ("en-US", "fr-FR", "de-DE", "ja-JP", "pt-BR", "es-MX", "zh-CN")
_CITIES = ("Zürich", "São Paulo", "Kraków", "Reykjavík", "東京", "Montréal")

#: Users are created between these days; updates never pass the last one.
_FIRST_DAY = dt.date(2019, 1, 1)
_LAST_DAY = dt.date(2025, 12, 31)
_SECONDS_PER_DAY = 86_400

#: Share of users (out of 100) for each kind of value, picked per user.
_EMPTY_ATTRIBUTES_PERCENT = 45
_NAMED_PERCENT = 97  # the rest have a null friendly_name
_UNCHANGED_PERCENT = 30
_ADMIN_PERCENT = 8


@dataclass(frozen=True)
class Credentials:
    """The account SID, auth token, API key and secret of one seeded account.

    The two secrets stay out of the ``repr``, as a real account's would.

    Attributes:
        account_sid: ``"AC"`` and 32 hex digits.
        auth_token: 32 hex digits, the password paired with ``account_sid``.
        api_key: ``"SK"`` and 32 hex digits.
        api_secret: 32 letters and digits, the password paired with ``api_key``.
    """

    account_sid: str
    auth_token: str = field(repr=False)
    api_key: str
    api_secret: str = field(repr=False)


def derive_sid(prefix: str, seed: int, label: str) -> str:
    """Return a stable SID: ``prefix`` and 32 hex digits hashed from the seed.

    Args:
        prefix: The two-letter resource prefix, such as ``"AC"`` or ``"IS"``.
        seed: The dataset seed.
        label: What the SID names, so that distinct resources get distinct SIDs.
    """
    digest = hashlib.blake2b(f"{seed}:{label}".encode(), digest_size=16)
    return prefix + digest.hexdigest()


def derive_credentials(seed: int) -> Credentials:
    """Return the seeded account's credentials."""
    rng = random.Random(f"credentials:{seed}")
    alphabet = string.ascii_letters + string.digits
    return Credentials(
        account_sid=derive_sid("AC", seed, "account"),
        auth_token=derive_sid("", seed, "auth-token"),
        api_key=derive_sid("SK", seed, "api-key"),
        api_secret="".join(rng.choice(alphabet) for _ in range(32)),
    )


def presence_of(sid: str, *, reachability: bool) -> tuple[bool | None, bool | None]:
    """Return the ``(is_online, is_notifiable)`` a fetch reports for one user.

    The values are read from the user's SID, so they are seeded with it. Even
    with reachability on, some users have never been online or never
    registered for push, and the API reports null for them.

    Args:
        sid: The user's SID.
        reachability: Whether the service has ``reachability_enabled``.
    """
    if not reachability:
        return None, None

    bits = int(sid[2:10], 16)
    online = None if bits % 6 == 0 else bool(bits >> 4 & 1)
    notifiable = None if bits >> 8 & 3 == 0 else bool(bits >> 12 & 1)
    return online, notifiable


def make_services(
    count: int, *, seed: int, account_sid: str, base_url: str
) -> list[Record]:
    """Return ``count`` seeded Conversations service records.

    Args:
        count: How many services the account has.
        seed: The dataset seed.
        account_sid: The owning account's SID.
        base_url: Absolute origin the ``url`` and ``links`` are built on.
    """
    return [
        _service_record(i, seed=seed, account_sid=account_sid, base_url=base_url)
        for i in range(count)
    ]


def _service_record(
    index: int, *, seed: int, account_sid: str, base_url: str
) -> Record:
    sid = derive_sid("IS", seed, f"service:{index}")
    url = f"{base_url}/v1/Services/{sid}"
    name = "Default Conversations Service" if index == 0 else f"Service {index + 1}"
    created = _FIRST_DAY + dt.timedelta(days=17 * index)
    links = (
        ("conversations", "Conversations"),
        ("users", "Users"),
        ("roles", "Roles"),
        ("bindings", "Bindings"),
        ("configuration", "Configuration"),
        ("participant_conversations", "ParticipantConversations"),
        ("conversation_with_participants", "ConversationWithParticipants"),
    )
    return {
        "account_sid": account_sid,
        "sid": sid,
        "friendly_name": name,
        "date_created": f"{created.isoformat()}T09:30:00Z",
        "date_updated": f"{created.isoformat()}T09:30:00Z",
        "url": url,
        "links": {key: f"{url}/{segment}" for key, segment in links},
    }


def make_users(
    n: int, *, seed: int, account_sid: str, service_sid: str, base_url: str
) -> list[Record]:
    """Return ``n`` seeded users of one service, as the list endpoint serves them.

    Identities are unique within the service. ``attributes`` is the JSON text
    the API sends, ``is_online`` and ``is_notifiable`` are null (a list never
    carries presence), and ``url`` and ``links`` are absolute under
    ``base_url``. The same arguments always give the same records.

    Args:
        n: How many users to build.
        seed: The dataset seed; combined with ``service_sid``, so services
            built with one seed still hold different users.
        account_sid: The owning account's SID.
        service_sid: The Conversations service the users belong to.
        base_url: Absolute origin such as ``"http://127.0.0.1:8080"``.

    Returns:
        The records in the order the list endpoint pages through them.

    Example:
        >>> users = make_users(
        ...     3, seed=0, account_sid="AC" + "0" * 32,
        ...     service_sid="IS" + "0" * 32, base_url="http://127.0.0.1:8080",
        ... )
        >>> [user["sid"][:2] for user in users]
        ['US', 'US', 'US']
    """
    if n < 0:
        raise ValueError(f"n must be zero or more, got {n}")

    factory = UserFactory(
        seed=seed, account_sid=account_sid, service_sid=service_sid, base_url=base_url
    )
    build = factory.build
    with collector_paused():
        return [build(index) for index in range(n)]


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many records.

    Every record is a fresh container, so a large build triggers collection
    after collection that find nothing: pausing roughly halves the time to
    build 300,000 users and cuts the time to copy them fivefold. Records hold
    no cycles, so nothing is left behind.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class UserFactory:
    """Builds the users of one service from pre-made pools of strings."""

    def __init__(
        self, *, seed: int, account_sid: str, service_sid: str, base_url: str
    ) -> None:
        self._rng = random.Random(f"users:{seed}:{service_sid}")
        self._account_sid = account_sid
        self._service_sid = service_sid
        self._users_url = f"{base_url}/v1/Services/{service_sid}/Users/"
        self._user_role = derive_sid("RL", seed, f"{service_sid}:user-role")
        self._admin_role = derive_sid("RL", seed, f"{service_sid}:admin-role")
        self._people = _people()
        self._attributes = _attribute_pool(self._rng)
        self._days = _day_strings()
        self._times = _time_strings()
        self._identity_styles = _identity_styles()

    def build(self, index: int) -> Record:
        """Return the user at ``index`` (call in index order: draws are sequential)."""
        rng = self._rng
        sid = f"US{rng.getrandbits(128):032x}"
        pick, person = divmod(rng.getrandbits(64), len(self._people))
        first, last, full = self._people[person]
        pick, style = divmod(pick, len(self._identity_styles))
        pick, share = divmod(pick, 100)
        created, updated = self._dates(rng.getrandbits(64))
        url = self._users_url + sid
        return {
            "sid": sid,
            "account_sid": self._account_sid,
            "chat_service_sid": self._service_sid,
            "role_sid": self._admin_role if share < _ADMIN_PERCENT else self._user_role,
            "identity": self._identity_styles[style](first, last, index),
            "friendly_name": None if share >= _NAMED_PERCENT else full,
            "attributes": self._attributes_for(pick),
            "is_online": None,
            "is_notifiable": None,
            "date_created": created,
            "date_updated": updated,
            "url": url,
            "links": {"user_conversations": url + "/Conversations"},
        }

    def _attributes_for(self, pick: int) -> str:
        pick, share = divmod(pick, 100)
        if share < _EMPTY_ATTRIBUTES_PERCENT:
            return "{}"
        return self._attributes[pick % len(self._attributes)]

    def _dates(self, pick: int) -> tuple[str, str]:
        """Return ``(date_created, date_updated)``, the second never earlier."""
        days, times = self._days, self._times
        pick, created = divmod(pick, len(days) * _SECONDS_PER_DAY)
        pick, share = divmod(pick, 100)
        day, second = divmod(created, _SECONDS_PER_DAY)
        created_text = days[day] + times[second]
        if share < _UNCHANGED_PERCENT:
            return created_text, created_text

        later = created + pick % (len(days) * _SECONDS_PER_DAY - created)
        day, second = divmod(later, _SECONDS_PER_DAY)
        return created_text, days[day] + times[second]


@functools.cache
def _people() -> tuple[tuple[str, str, str], ...]:
    """Return ``(first, last, friendly_name)`` triples, CJK and emoji included."""
    people = [
        (first, last, f"{first} {last}")
        for first in _FIRST_NAMES
        for last in _LAST_NAMES
    ]
    people += [(name, "", name) for name in _CJK_NAMES for _ in range(20)]
    people += [
        (first, emoji, f"{first} {emoji}") for first in _FIRST_NAMES for emoji in _EMOJI
    ]
    return tuple(people)


IdentityStyle = Callable[[str, str, int], str]


@functools.cache
def _identity_styles() -> tuple[IdentityStyle, ...]:
    """Return identity builders, repeated to weight the common ones."""

    def email(first: str, last: str, index: int) -> str:
        local = f"{first}.{last}" if last.isalpha() else first
        return f"{local.lower()}.{index}@{_DOMAINS[index % len(_DOMAINS)]}"

    def agent(first: str, last: str, index: int) -> str:
        return f"agent{index:06d}"

    def handle(first: str, last: str, index: int) -> str:
        return f"{first.lower()}_{index}"

    def phone(first: str, last: str, index: int) -> str:
        return f"+1555{index:07d}"

    def playful(first: str, last: str, index: int) -> str:
        return f"{first}{_EMOJI[index % len(_EMOJI)]}{index}"

    return (email,) * 4 + (agent,) * 2 + (handle,) * 2 + (phone, playful)


def _attribute_pool(rng: random.Random) -> list[str]:
    """Return JSON attribute documents: flat, nested, with lists and unicode."""
    documents: list[object] = []
    for team in _TEAMS:
        for region in _REGIONS:
            tags = rng.sample(_TAGS, k=rng.randint(0, 3))
            plan = rng.choice(_PLANS)
            documents.append(
                {"team": {"name": team, "region": region}, "plan": plan, "tags": tags}
            )
    documents += [
        {"locale": locale, "city": city}
        for locale, city in zip(_LOCALES, _CITIES, strict=False)
    ]
    documents += [
        {"duty": "agent"},
        {"duty": "tech"},
        {"nickname": "🐙 octo"},
        {"score": 4.5, "verified": True},
    ]
    documents += [
        {"crm": {"id": rng.randrange(10**6), "owner": {"email": "ops@example.com"}}}
    ]
    return [json.dumps(document, ensure_ascii=False) for document in documents]


@functools.cache
def _day_strings() -> tuple[str, ...]:
    """Return ``"YYYY-MM-DDT"`` for every day users may be created on."""
    count = (_LAST_DAY - _FIRST_DAY).days + 1
    return tuple(f"{_FIRST_DAY + dt.timedelta(days=day)}T" for day in range(count))


@functools.cache
def _time_strings() -> tuple[str, ...]:
    """Return ``"HH:MM:SSZ"`` for every second of a day."""
    return tuple(
        f"{hour:02d}:{minute:02d}:{second:02d}Z"
        for hour in range(24)
        for minute in range(60)
        for second in range(60)
    )
