"""DatabaseURL: the one place a connection string is parsed, resolved and masked."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from storekit.errors import ConfigurationError

SQLITE_SCHEMES = ("sqlite",)
POSTGRES_SCHEMES = ("postgres", "postgresql", "postgresql+psycopg")
ACCEPTED_SCHEMES = SQLITE_SCHEMES + POSTGRES_SCHEMES
DEFAULT_SQLITE_FILE = "storekit.db"
MEMORY = ":memory:"
_MASK = "***"


@dataclass(frozen=True)
class DatabaseURL:
    """An immutable, parsed database URL whose str() and repr() never show the password."""

    scheme: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    host: str | None = None
    port: int | None = None
    database: str = ""
    query: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, url: str | DatabaseURL) -> DatabaseURL:
        if isinstance(url, DatabaseURL):
            return url
        if not isinstance(url, str) or "://" not in url:
            raise ConfigurationError(
                f"not a database URL: {_mask_raw(str(url))!r}; expected scheme://..., "
                f"with scheme one of {', '.join(ACCEPTED_SCHEMES)}"
            )
        scheme = url.split("://", 1)[0].lower()
        if scheme not in ACCEPTED_SCHEMES:
            raise ConfigurationError(
                f"unknown database scheme {scheme!r} in {_mask_raw(url)!r}; "
                f"accepted: {', '.join(s + '://' for s in ACCEPTED_SCHEMES)}"
            )
        if scheme in SQLITE_SCHEMES:
            return cls._parse_sqlite(url)
        return cls._parse_postgres(scheme, url)

    @classmethod
    def _parse_sqlite(cls, url: str) -> DatabaseURL:
        rest = url.split("://", 1)[1]
        path, _, qs = rest.partition("?")
        if path in (MEMORY, "/" + MEMORY, ""):
            database = MEMORY if path else ""
        elif path.startswith("/"):
            # sqlite:///relative.db has one slash left; sqlite:////abs.db has two.
            database = unquote(path[1:])
        else:
            raise ConfigurationError(
                f"malformed SQLite URL {url!r}: use sqlite:///relative.db, "
                "sqlite:////absolute/path.db or sqlite://:memory:"
            )
        if not database:
            raise ConfigurationError(f"SQLite URL {url!r} names no file")
        return cls("sqlite", database=database, query=tuple(parse_qsl(qs)))

    @classmethod
    def _parse_postgres(cls, scheme: str, url: str) -> DatabaseURL:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigurationError(
                f"malformed PostgreSQL URL {_mask_raw(url)!r}: {exc}"
            ) from None
        return cls(
            scheme=scheme,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            host=unquote(parts.hostname) if parts.hostname else None,
            port=port,
            database=unquote(parts.path.lstrip("/")),
            query=tuple(parse_qsl(parts.query)),
        )

    @property
    def backend(self) -> str:
        return "sqlite" if self.scheme in SQLITE_SCHEMES else "postgres"

    @property
    def is_memory(self) -> bool:
        return self.backend == "sqlite" and self.database == MEMORY

    @property
    def path(self) -> Path:
        """The SQLite file this URL names."""
        return Path(self.database)

    def replace(self, **changes: object) -> DatabaseURL:
        return replace(self, **changes)  # type: ignore[arg-type]

    def render(self, *, mask: bool = True) -> str:
        if self.backend == "sqlite":
            base = "sqlite://:memory:" if self.is_memory else "sqlite:///" + quote(self.database)
        else:
            auth = ""
            if self.username is not None:
                auth = quote(self.username, safe="")
                if self.password is not None:
                    auth += ":" + (_MASK if mask else quote(self.password, safe=""))
                auth += "@"
            host = self.host or ""
            if ":" in host:
                host = f"[{host}]"
            port = f":{self.port}" if self.port is not None else ""
            base = f"{self.scheme}://{auth}{host}{port}/{quote(self.database)}"
        # quote, not quote_plus: libpq does not read "+" as a space.
        return base + ("?" + urlencode(self.query, quote_via=quote) if self.query else "")

    def conninfo(self) -> str:
        """The libpq connection string with the real password, for the driver only."""
        return self.replace(scheme="postgresql").render(mask=False)

    def __str__(self) -> str:
        return self.render(mask=True)

    def __repr__(self) -> str:
        return f"DatabaseURL({self.render(mask=True)!r})"


def resolve_url(url: str | DatabaseURL | None = None) -> DatabaseURL:
    """The explicit URL, else STOREKIT_DATABASE_URL, else DATABASE_URL, else ./storekit.db."""
    if url is None:
        url = os.environ.get("STOREKIT_DATABASE_URL") or os.environ.get("DATABASE_URL") or None
    if url is None:
        return DatabaseURL("sqlite", database=DEFAULT_SQLITE_FILE)
    return DatabaseURL.parse(url)


def mask_password(text: str, password: str | None) -> str:
    """Remove a known password from free text, e.g. a driver's error message."""
    if not password:
        return text
    for form in {password, quote(password, safe="")}:
        text = text.replace(form, _MASK)
    return text


def _mask_raw(url: str) -> str:
    # Used before the URL is parsed, so the password is found by position, not by value.
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo, at, hostpart = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:{_MASK}@{hostpart}"
