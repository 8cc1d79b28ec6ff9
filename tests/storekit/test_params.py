import pytest

from storekit.errors import ProgrammingError
from storekit.params import translate


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT ?", "SELECT %s"),
        ("SELECT '?', ?", "SELECT '?', %s"),
        ("SELECT 'it''s ?', ?", "SELECT 'it''s ?', %s"),
        ("SELECT E'\\' ?', ?", "SELECT E'\\' ?', %s"),
        ('SELECT "col?" FROM t WHERE a = ?', 'SELECT "col?" FROM t WHERE a = %s'),
        ("SELECT ? -- what?\n", "SELECT %s -- what?\n"),
        ("SELECT /* ? :x /* nested ? */ */ ?", "SELECT /* ? :x /* nested ? */ */ %s"),
        ("SELECT $$ ? :x $$, ?", "SELECT $$ ? :x $$, %s"),
        ("SELECT $fn$ ? $fn$, ?", "SELECT $fn$ ? $fn$, %s"),
        ("SELECT x::text FROM t WHERE y = ?", "SELECT x::text FROM t WHERE y = %s"),
        ("SELECT doc ?? 'k' FROM t WHERE a = ?", "SELECT doc ? 'k' FROM t WHERE a = %s"),
        ("SELECT 'a%' LIKE ?", "SELECT 'a%%' LIKE %s"),
        ("SELECT 5 % 2", "SELECT 5 %% 2"),
    ],
)
def test_translation_to_psycopg(sql: str, expected: str) -> None:
    assert translate(sql, "postgres").sql == expected


def test_named_placeholders() -> None:
    t = translate("SELECT :a, ':b', :a::int, :c", "postgres")
    assert t.sql == "SELECT %(a)s, ':b', %(a)s::int, %(c)s"
    assert t.names == ("a", "c")
    assert translate("SELECT :a", "sqlite").sql == "SELECT :a"


def test_mixed_styles_are_rejected_before_sending() -> None:
    with pytest.raises(ProgrammingError, match="mixes"):
        translate("SELECT ?, :a", "sqlite")


@pytest.mark.parametrize("sql", ["SELECT 'open", 'SELECT "open', "SELECT /* open", "SELECT $$x"])
def test_unterminated_quotes_are_programming_errors(sql: str) -> None:
    with pytest.raises(ProgrammingError, match="unterminated"):
        translate(sql, "postgres")


def test_translation_is_cached() -> None:
    sql = "SELECT ? AS cached_probe"
    assert translate(sql, "postgres") is translate(sql, "postgres")
