import pytest

import storekit
from storekit.url import DatabaseURL, resolve_url


@pytest.mark.parametrize(
    ("url", "backend", "database"),
    [
        ("sqlite:///relative.db", "sqlite", "relative.db"),
        ("sqlite:////abs/path.db", "sqlite", "/abs/path.db"),
        ("sqlite://:memory:", "sqlite", ":memory:"),
        ("postgres://u:p@h:5432/app", "postgres", "app"),
        ("postgresql://u:p@h/app", "postgres", "app"),
        ("postgresql+psycopg://u@h:1/app", "postgres", "app"),
    ],
)
def test_parse_accepted_schemes(url: str, backend: str, database: str) -> None:
    parsed = DatabaseURL.parse(url)
    assert parsed.backend == backend
    assert parsed.database == database


def test_password_is_masked_everywhere() -> None:
    url = DatabaseURL.parse("postgresql://agent:s3cr%40t@db.example:5432/app?sslmode=require")
    assert url.password == "s3cr@t"
    for text in (str(url), repr(url), url.render()):
        assert "s3cr" not in text
        assert "***" in text
    assert "password='s3cr@t'" in url.conninfo()  # key/value: the driver gets it as is
    assert url.replace(port=6543).port == 6543


@pytest.mark.parametrize(
    "bad",
    ["mysql://u:hunter2@h/db", "hunter2", "redis://h", "sqlite:relative.db", "sqlite://"],
)
def test_bad_urls_raise_configuration_error_without_password(bad: str) -> None:
    with pytest.raises(storekit.ConfigurationError) as info:
        DatabaseURL.parse(bad)
    assert "hunter2" not in str(info.value) or bad == "hunter2"


def test_unknown_scheme_names_it_and_the_accepted_ones() -> None:
    with pytest.raises(storekit.ConfigurationError, match=r"'mysql'.*sqlite://.*postgresql://"):
        storekit.create_database("mysql://root:hunter2@localhost/app")


def test_malformed_port_is_a_configuration_error() -> None:
    with pytest.raises(storekit.ConfigurationError, match="malformed") as info:
        DatabaseURL.parse("postgresql://u:hunter2@h:notaport/db")
    assert "hunter2" not in str(info.value)


def test_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STOREKIT_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert resolve_url().database == "storekit.db"
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@h/one")
    assert resolve_url().database == "one"
    monkeypatch.setenv("STOREKIT_DATABASE_URL", "sqlite:///two.db")
    assert resolve_url().database == "two.db"
    assert resolve_url("sqlite:///three.db").database == "three.db"


def test_create_database_defaults_to_sqlite_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.delenv("STOREKIT_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    with storekit.create_database() as db:
        assert db.backend == "sqlite"
        db.run("CREATE TABLE t (x)")
    assert (tmp_path / "storekit.db").exists()  # type: ignore[operator]


def test_unreachable_postgres_is_unavailable_never_sqlite() -> None:
    port = _closed_port()
    with pytest.raises(storekit.DatabaseUnavailable) as info:
        storekit.create_database(
            f"postgresql://u:hunter2@127.0.0.1:{port}/db",
            pool=storekit.PoolOptions(connect_timeout=2),
        )
    assert "hunter2" not in str(info.value)
    assert "***" in str(info.value)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
