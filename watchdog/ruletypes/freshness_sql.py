"""The SQL of a freshness check: table names as written, expressions as guarded text, one statement.

Identifiers are composed with ``psycopg2.sql.Identifier`` and never pasted.
``loaded_at``, ``group_by`` and ``filter`` may be SQL expressions written by
the rule's author: ``watchdog.sqlcheck.check_expression`` has checked each
with PostgreSQL's own parser to be one read-only expression as ``(text)``,
and it is composed exactly so, in parentheses, so it cannot end the
statement, open a second one or comment out the rest.
Everything runs in a read-only transaction under the source's statement
timeout besides.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from psycopg2 import sql as pgsql

# A bare column name: used as a quoted identifier, exactly as written (case and all).
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


class SqlTextError(ValueError):
    """Rule-written SQL that is not what its key needs; the message says why."""


def parse_table(text: str) -> tuple[str, ...]:
    """``schema.table`` or ``table`` as identifier parts; parts in double quotes may hold dots (``""`` is a quote).

    ``analytics.events`` gives ``("analytics", "events")`` and
    ``'"Sales"."Orders.v2"'`` gives ``("Sales", "Orders.v2")``. Unquoted parts
    are taken exactly as written. Raises SqlTextError for anything else.
    """
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == '"':
            name, i = _quoted(text, i)
        else:
            end = i
            while end < n and text[end] not in '."':
                end += 1
            name, i = text[i:end], end
        if not name:
            raise SqlTextError(f"'{text}' is not a table name: an empty name part (write schema.table, or quote "
                               "parts that hold dots: '\"Sales\".\"Orders.v2\"')")
        parts.append(name)
        if i == n:
            break
        if text[i] != ".":
            raise SqlTextError(f"'{text}' is not a table name: unexpected '{text[i]}' after {name!r} "
                               "(quote a part that holds quotes or dots, doubling quotes inside: \"a\"\"b\")")
        i += 1
    if len(parts) > 2:
        raise SqlTextError(f"'{text}' is not a table name: {len(parts)} dotted parts; give schema.table, or quote "
                           "a name that holds dots: '\"Sales\".\"Orders.v2\"'")
    return tuple(parts)


def _quoted(text: str, i: int) -> tuple[str, int]:
    """The quoted name starting at ``text[i]`` (a ``"``) and the index after it."""
    out: list[str] = []
    i += 1
    while i < len(text):
        if text[i] == '"':
            if i + 1 < len(text) and text[i + 1] == '"':
                out.append('"')
                i += 2
                continue
            return "".join(out), i + 1
        out.append(text[i])
        i += 1
    raise SqlTextError(f"'{text}' is not a table name: a double quote is not closed")


def quote_table(parts: tuple[str, ...]) -> str:
    """The text ``parse_table`` reads back as ``parts`` (every part quoted)."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in parts)


def column_or_expression(text: str) -> pgsql.Composable:
    """A bare column name as a quoted identifier; any other text as an expression in parentheses.

    The text must have passed ``sqlcheck.check_expression`` unless it is a bare column name.
    """
    if _COLUMN.match(text):
        return pgsql.Identifier(text)
    return pgsql.SQL("({})").format(pgsql.SQL(text))


def is_column(text: str) -> bool:
    """Whether ``text`` is used as a column name (quoted as written) rather than as an expression."""
    return bool(_COLUMN.match(text))


def table_statement(table: tuple[str, ...], loaded_at: str, group_by: str | None, filter_: str | None) -> pgsql.Composed:
    """``select [group,] max(loaded_at) from table [where filter] [group by 1]``, composed, never pasted."""
    where = pgsql.SQL(" where ({})").format(pgsql.SQL(filter_)) if filter_ else pgsql.SQL("")
    loaded = column_or_expression(loaded_at)
    if group_by is None:
        return pgsql.SQL("select max({}) from {}{}").format(loaded, pgsql.Identifier(*table), where)
    return pgsql.SQL("select ({})::text, max({}) from {}{} group by 1").format(
        column_or_expression(group_by), loaded, pgsql.Identifier(*table), where)


def expected_statement(table: tuple[str, ...], loaded_at: str, group_by: str, filter_: str | None,
                       expected: Sequence[str]) -> pgsql.Composed:
    """The last load of each expected group, one index lookup each: a ``max()`` per value, not a grouped scan.

    ``select e.g, (select max(loaded_at) from table where (group_by)::text = e.g [and (filter)]) from (values
    ...) as e(g)``: with an index on (group_by, loaded_at) each subquery reads one end of the index (a grouped
    ``max()`` over every row reads the whole table); without one PostgreSQL scans as before. The cast to
    text is a no-op on a text column, so its index applies. A group with no row comes back with NULL.
    ``expected`` must not be empty; the values are literals, composed, never pasted.
    """
    where = pgsql.SQL(" and ({})").format(pgsql.SQL(filter_)) if filter_ else pgsql.SQL("")
    values = pgsql.SQL(", ").join(pgsql.SQL("({})").format(pgsql.Literal(value)) for value in expected)
    return pgsql.SQL("select e.g, (select max({}) from {} where ({})::text = e.g{}) from (values {}) as e(g)").format(
        column_or_expression(loaded_at), pgsql.Identifier(*table), column_or_expression(group_by), where, values)
