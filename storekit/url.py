"""DatabaseURL: the one place a connection string is parsed, resolved and masked.

Masking works by structure only: the URL's password field, a ``password`` query option
and a conninfo ``password=`` key are replaced, never text that happens to equal the
password (a one-letter password must not turn "accepting" into "acce***ting").
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import quote, unquote, urlencode, urlsplit

from storekit.errors import ConfigurationError, shown

SQLITE_SCHEMES = ("sqlite",)
POSTGRES_SCHEMES = ("postgres", "postgresql", "postgresql+psycopg")
ACCEPTED_SCHEMES = SQLITE_SCHEMES + POSTGRES_SCHEMES
DEFAULT_SQLITE_FILE = "storekit.db"
MEMORY = ":memory:"
_MASK = "***"
_BOOLEANS = ("1", "0", "true", "false", "yes", "no", "on", "off")
# SQLite URI parameters storekit honours (sqlite.org/uri.html); anything else is refused.
SQLITE_OPTIONS: dict[str, tuple[str, ...]] = {
    "mode": ("ro", "rw", "rwc", "memory"),
    "immutable": _BOOLEANS,
    "cache": ("private", "shared"),
}
# libpq's secret connection parameters: those PQconndefaults marks as passwords
# (dispchar "*") and the SCRAM keys, which are worth as much as the password.
SECRET_OPTIONS = ("password", "sslpassword", "oauth_client_secret", "scram_client_key",
                  "scram_server_key")
# A URL's userinfo, and a libpq key/value or query secret, inside free text.
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)\S*(@)")
_PASSWORD_KEY = re.compile(
    rf"(\b(?:{'|'.join(SECRET_OPTIONS)})\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&]*)", re.IGNORECASE)


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

    def __post_init__(self) -> None:
        # libpq and SQLite take UTF-8 C strings: a lone surrogate cannot be encoded and a
        # NUL would cut the value short. Checked once here, before any driver sees them.
        # The message names the field, never its text (it may be the password).
        texts = [("scheme", self.scheme), ("user name", self.username),
                 ("password", self.password), ("host", self.host),
                 ("database", self.database)]
        for key, value in self.query:
            texts += [("option name", key), (f"value of option {shown(key)}", value)]
        secrets = {"password", *(f"value of option {k!r}" for k in SECRET_OPTIONS)}
        for what, text in texts:
            if text is None and what not in ("scheme", "database"):
                continue
            try:
                if not isinstance(text, str):
                    raise TypeError(f"not a str but {type(text).__name__}")
                if "\x00" in text:
                    raise ValueError("a NUL character")
                text.encode()
            except (TypeError, ValueError) as exc:  # UnicodeEncodeError: a lone surrogate
                cause: Exception = exc
                if isinstance(exc, UnicodeEncodeError) and what in secrets:
                    # Its repr() shows the whole text: keep the position, not the secret.
                    cause = UnicodeEncodeError(exc.encoding, "*" * len(exc.object),
                                               exc.start, exc.end, exc.reason)
                raise ConfigurationError(f"database URL: the {what} cannot be used:"
                                         f" {getattr(exc, 'reason', exc)}") from cause
        if self.port is not None and (type(self.port) is not int
                                      or not 0 < self.port < 65536):
            raise ConfigurationError("database URL: port must be an int from 1 to 65535")

    @classmethod
    def parse(cls, url: str | DatabaseURL) -> DatabaseURL:
        if isinstance(url, DatabaseURL):
            return url
        if not isinstance(url, str):
            raise ConfigurationError(f"a database URL is a str or DatabaseURL, not"
                                     f" {type(url).__name__}")
        url = str.__str__(url)  # a plain str: a subclass's methods are the caller's code
        if "://" not in url:
            raise ConfigurationError(
                f"not a database URL: {_mask_raw(url)!r}; expected scheme://..., "
                f"with scheme one of {', '.join(ACCEPTED_SCHEMES)}"
            )
        scheme = url.split("://", 1)[0].lower()
        if scheme not in ACCEPTED_SCHEMES:
            raise ConfigurationError(
                f"unknown database scheme {scheme!r} in {_mask_raw(url)!r}; "
                f"accepted: {', '.join(s + '://' for s in ACCEPTED_SCHEMES)}"
            )
        if "\x00" in url or "%00" in url:
            # libpq and SQLite read C strings: a NUL would cut the value short.
            raise ConfigurationError(f"database URL {_mask_raw(url)!r} contains a NUL character")
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
                f"malformed SQLite URL {_mask_raw(url)!r}: use sqlite:///relative.db, "
                "sqlite:////absolute/path.db or sqlite://:memory:"
            )
        if not database:
            raise ConfigurationError(f"SQLite URL {_mask_raw(url)!r} names no file")
        query = _query(qs, url)
        for key, value in query:
            allowed = SQLITE_OPTIONS.get(key)
            if allowed is None:
                raise ConfigurationError(
                    f"unknown SQLite URL option {key!r} in {_mask_raw(url)!r}; "
                    f"storekit honours {', '.join(SQLITE_OPTIONS)}"
                )
            if value.lower() not in allowed:
                raise ConfigurationError(
                    f"SQLite URL option {key}={value!r} is not one of {', '.join(allowed)}"
                )
        return cls("sqlite", database=database, query=query)

    @classmethod
    def _parse_postgres(cls, scheme: str, url: str) -> DatabaseURL:
        # Split by hand, not with urlsplit().hostname: that lowercases the host, which
        # breaks a %2F-encoded socket directory such as %2Fvar%2Frun%2FPostgres.
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise ConfigurationError(
                f"malformed PostgreSQL URL {_mask_raw(url)!r}: {exc}"
            ) from None
        userinfo, at, hostport = parts.netloc.rpartition("@")
        username = password = None
        if at:
            user, colon, secret = userinfo.partition(":")
            username = unquote(user) or None
            password = unquote(secret) if colon else None
        host, port = _host_port(hostport, url)
        query = _query(parts.query, url)
        options = dict(query)
        if "password" in options:
            # One place holds the password, so one place masks it.
            password = options.pop("password")
            query = tuple(options.items())
        return cls(scheme=scheme, username=username, password=password, host=host,
                   port=port, database=unquote(parts.path.lstrip("/")), query=query)

    @property
    def backend(self) -> str:
        return "sqlite" if self.scheme in SQLITE_SCHEMES else "postgres"

    @property
    def options(self) -> dict[str, str]:
        return dict(self.query)

    @property
    def is_memory(self) -> bool:
        return self.scheme in SQLITE_SCHEMES and (
            self.database == MEMORY or self.options.get("mode") == "memory")

    @property
    def path(self) -> Path:
        """The SQLite file this URL names."""
        return Path(self.database)

    def replace(self, **changes: object) -> DatabaseURL:
        return replace(self, **changes)  # type: ignore[arg-type]

    def render(self, *, mask: bool = True) -> str:
        if self.scheme in SQLITE_SCHEMES:
            base = ("sqlite://:memory:" if self.database == MEMORY
                    else "sqlite:///" + quote(self.database))
        else:
            auth = ""
            if self.username is not None or self.password is not None:
                auth = quote(self.username or "", safe="")
                if self.password is not None:
                    auth += ":" + (_MASK if mask else quote(self.password, safe=""))
                auth += "@"
            host = self.host or ""
            ipv6 = ":" in host and not host.startswith("/")
            # A socket directory is written %2F...: libpq reads a raw "/" as the path.
            host = f"[{host}]" if ipv6 else quote(host, safe="")
            port = f":{self.port}" if self.port is not None else ""
            base = f"{self.scheme}://{auth}{host}{port}/{quote(self.database)}"
        query = [(k, _MASK if mask and k in SECRET_OPTIONS else v) for k, v in self.query]
        # quote, not quote_plus: libpq does not read "+" as a space.
        return base + ("?" + urlencode(query, safe="*", quote_via=quote) if query else "")

    def conninfo(self) -> str:
        """The libpq key/value connection string with the real password, for the driver
        only. Key/value, not a URL: libpq's URL parser quotes values in its errors."""
        fields = {"host": self.host, "port": self.port, "user": self.username,
                  "password": self.password, "dbname": self.database or None}
        pairs = [(k, str(v)) for k, v in fields.items() if v is not None]
        # Query options come last, so they win as they do in a libpq URL.
        return " ".join(f"{k}={_quote_conninfo(v)}" for k, v in pairs + list(self.query))

    def __str__(self) -> str:
        return self.render(mask=True)

    def __repr__(self) -> str:
        return f"DatabaseURL({self.render(mask=True)!r})"


def file_url(path: object) -> DatabaseURL:
    """open_database's path (a str or os.PathLike) as a SQLite URL. Anything else is
    refused: str() of None or 5 would silently create a file named "None" or "5"."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigurationError(f"open_database: the path must be a str or os.PathLike,"
                                 f" not {type(path).__name__}")
    try:
        text = str(os.fspath(path))  # str(): a plain str, even from a str subclass
    except (TypeError, ValueError, RecursionError) as exc:  # a __str__/__fspath__ that raises
        raise ConfigurationError(f"open_database: the path {shown(path)} is not a file name:"
                                 f" {type(exc).__name__}: {exc}") from exc
    if not isinstance(text, str):
        raise ConfigurationError(f"open_database: the path must be text, not"
                                 f" {type(text).__name__}")
    return DatabaseURL("sqlite", database=text)


def resolve_url(url: str | DatabaseURL | None = None) -> DatabaseURL:
    """The explicit URL, else STOREKIT_DATABASE_URL, else DATABASE_URL, else ./storekit.db."""
    if url is None:
        url = os.environ.get("STOREKIT_DATABASE_URL") or os.environ.get("DATABASE_URL") or None
    if url is None:
        return DatabaseURL("sqlite", database=DEFAULT_SQLITE_FILE)
    return DatabaseURL.parse(url)


def mask_secrets(text: str) -> str:
    """Mask passwords in free text by structure: a URL's userinfo and the secret keys
    (password=..., sslpassword=..., ...)."""
    lower = text.lower()
    if "password" in lower or "secret" in lower or "scram" in lower:
        text = _PASSWORD_KEY.sub(lambda m: m.group(1) + _MASK, text)
    if "://" in text:
        text = _USERINFO.sub(lambda m: m.group(1) + _MASK + m.group(2), text)
    return text


def _mask_raw(url: str) -> str:
    # Used before the URL is parsed, so the password is found by position, not by value;
    # everything between the first ":" and the last "@" goes (over-masking never leaks).
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if sep and at and ":" in userinfo:
        url = f"{scheme}://{userinfo.split(':', 1)[0]}:{_MASK}@{hostpart}"
    return mask_secrets(url)


def _host_port(hostport: str, url: str) -> tuple[str | None, int | None]:
    if hostport.startswith("["):
        host, bracket, rest = hostport[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigurationError(f"malformed PostgreSQL URL {_mask_raw(url)!r}: "
                                     "Invalid IPv6 URL")
        port_text = rest[1:]
    else:
        host, _, port_text = hostport.partition(":")
        host = unquote(host)
    if not port_text:
        return host or None, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigurationError(
            f"malformed PostgreSQL URL {_mask_raw(url)!r}: port {port_text!r} is not a "
            "number from 1 to 65535 (several hosts? use ?host=a,b&port=1,2)"
        )
    return host or None, int(port_text)


def _query(qs: str, url: str) -> tuple[tuple[str, str], ...]:
    # Not parse_qsl: it reads "+" as a space, and libpq (whose URLs these are) does not.
    pairs: dict[str, str] = {}
    for item in filter(None, qs.split("&")):
        key, _, value = item.partition("=")
        key = unquote(key)
        if key in pairs:
            raise ConfigurationError(f"URL option {key!r} is given twice in {_mask_raw(url)!r}")
        pairs[key] = unquote(value)
    return tuple(pairs.items())


def _quote_conninfo(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
