"""Is this SQL one read-only query? Checked with PostgreSQL's own parser (pglast wraps libpg_query).

Rule files are written by on-call engineers, who may query the warehouse but
not change it. Run time keeps a read-only transaction, but that alone is not
enough: ``commit; insert ...`` ends the read-only transaction from inside a
multi-statement string, and some functions act outside any transaction
(``set_config``, ``pg_terminate_backend``, ``dblink``, ``lo_export``). So
validation accepts exactly one plain query:

- ``check_query(text)``: one ``SELECT`` / ``WITH ... SELECT`` / ``VALUES`` /
  ``TABLE`` statement, with no data-modifying CTE, no ``SELECT INTO``, no
  ``FOR UPDATE``/``FOR SHARE`` and no call of a function with side effects;
- ``check_expression(text)``: one scalar SQL expression (a ``loaded_at``
  expression, a ``where`` filter) under the same rules, that cannot close a
  parenthesis it did not open nor comment out what follows it. Compose it
  into a query as ``(`` + text + ``)``, exactly as it was checked.

Both return None when the text is acceptable, else one sentence saying what
is wrong, written for the rule author. Neither raises for any input string.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast, parse_sql
from pglast.parser import ParseError

# Functions that act beyond the query's own read-only transaction, or run SQL
# given as a string (which this check could not see). Compared on the
# function's own name, without schema, lower-case.
DENIED_FUNCTIONS = frozenset({
    # settings, sessions, server
    "set_config", "pg_cancel_backend", "pg_terminate_backend", "pg_reload_conf", "pg_rotate_logfile",
    "pg_log_backend_memory_contexts", "pg_promote", "pg_switch_wal", "pg_create_restore_point",
    "pg_backup_start", "pg_backup_stop", "pg_start_backup", "pg_stop_backup",
    "pg_wal_replay_pause", "pg_wal_replay_resume", "pg_export_snapshot", "pg_import_system_collations",
    "pg_notify", "pg_current_xact_id", "txid_current",
    # sequences advance even in a read-only transaction
    "nextval", "setval",
    # files on the database server
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_file_write", "pg_file_rename",
    "pg_file_unlink", "pg_file_sync", "lo_import", "lo_export", "lo_unlink", "lo_create", "lo_from_bytea", "lo_put",
    # run SQL given as text, or on other servers
    "query_to_xml", "query_to_xml_and_xmlschema", "query_to_xmlschema", "cursor_to_xml", "cursor_to_xmlschema",
    "dblink", "dblink_exec", "dblink_send_query", "dblink_connect", "dblink_connect_u", "dblink_open",
    "dblink_fetch",
})
# Families of the above, by prefix: advisory locks are session-scoped, replication
# slots and statistics resets persist, pg_ls_* list server directories.
DENIED_PREFIXES = ("pg_advisory", "pg_try_advisory", "pg_stat_reset", "pg_replication_", "pg_create_",
                   "pg_drop_replication", "pg_logical_", "pg_ls_", "lo_", "dblink_", "pg_file_")

_WRITES = {
    ast.InsertStmt: "INSERT", ast.UpdateStmt: "UPDATE", ast.DeleteStmt: "DELETE", ast.MergeStmt: "MERGE",
}
_EXPRESSION_CLAUSES = ("fromClause", "whereClause", "groupClause", "havingClause", "windowClause", "sortClause",
                       "limitCount", "limitOffset", "lockingClause", "withClause", "intoClause", "distinctClause",
                       "valuesLists", "larg", "rarg")


def _nodes(node: Any) -> Iterator[ast.Node]:
    """``node`` and every AST node below it."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.Node):
            yield item
            slots: Any = getattr(type(item), "__slots__", ())  # pglast declares each node's fields there
            stack.extend(getattr(item, name, None) for name in slots)
        elif isinstance(item, (tuple, list)):
            stack.extend(item)


def _function_name(call: ast.FuncCall) -> str:
    parts = [getattr(p, "sval", "") for p in call.funcname or ()]
    return str(parts[-1]).lower() if parts else ""


def _denied(name: str) -> bool:
    return name in DENIED_FUNCTIONS or name.startswith(DENIED_PREFIXES)


def _read_only_problem(root: ast.Node) -> str | None:
    """What in the tree under ``root`` could write or act; None when nothing."""
    for node in _nodes(root):
        kind = _WRITES.get(type(node))
        if kind is not None:
            return f"it contains {kind} (a data-modifying WITH); only queries that read are allowed"
        if isinstance(node, ast.SelectStmt):
            if node.intoClause is not None:
                return "SELECT INTO creates a table; only queries that read are allowed"
            if node.lockingClause:
                return "FOR UPDATE/FOR SHARE locks rows; only queries that read are allowed"
        if isinstance(node, ast.FuncCall):
            name = _function_name(node)
            if _denied(name):
                return f"function {name}() has side effects or runs SQL from text; it is not allowed here"
    return None


def _parse(text: str, quote: bool = True) -> tuple[tuple[ast.RawStmt, ...] | None, str | None]:
    try:
        statements = parse_sql(text)
    except ParseError as exc:
        if not quote:  # PostgreSQL's message quotes the text near the error: not for a file's contents
            where = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
            return None, "not valid SQL: syntax error" + (f" at character {where + 1}" if where is not None else "")
        message = str(exc.args[0]) if exc.args else "syntax error"
        return None, f"not valid SQL: {message}"
    except UnicodeError:
        return None, "not valid SQL: it contains a character that is not valid Unicode"
    except Exception as exc:  # libpg_query's wrapper may fail in other ways; this check never raises
        return None, f"not valid SQL: {type(exc).__name__}"
    return tuple(statements), None


def _statement_name(stmt: ast.Node | None) -> str:
    """``CALL`` for a CallStmt, ``TRANSACTION`` for COMMIT/BEGIN, and so on."""
    return type(stmt).__name__.removesuffix("Stmt").upper() or "OTHER"


def check_query(text: str) -> str | None:
    """None when ``text`` is exactly one read-only query, else what is wrong with it.

    Given any string; returns a message such as "it holds 3 statements;
    give exactly one query (no ';' between statements)". Never raises.
    """
    if "\x00" in text:
        return "not valid SQL: it contains a NUL character"
    statements, problem = _parse(text)
    if statements is None:
        return problem
    if not statements:
        return "no SQL statement; give one query such as 'select max(loaded_at) from t'"
    if len(statements) > 1:
        return (f"it holds {len(statements)} statements; give exactly one query "
                "(no ';' between statements)")
    stmt = statements[0].stmt
    if not isinstance(stmt, ast.SelectStmt):
        name = _statement_name(stmt)
        article = "an" if name[0] in "AEIOU" else "a"
        return (f"it is not a query but {article} {name} statement; only a query "
                "(SELECT, WITH ... SELECT, VALUES) is allowed")
    return _read_only_problem(stmt)


def check_expression(text: str) -> str | None:
    """None when ``text`` is one read-only SQL expression, else what is wrong with it.

    The text is checked as it will run: inside parentheses, ``(text)``; so it
    can neither close them, nor end in a ``--`` comment, nor add clauses
    (``1) from t where (true`` is refused). Subqueries are allowed under the
    rules of ``check_query``. Never raises.
    """
    if "\x00" in text:
        return "not valid SQL: it contains a NUL character"
    if not text.strip():
        return "empty; give an SQL expression such as 'updated_at' or 'status = ''done'''"
    statements, problem = _parse(f"select ({text})")
    if statements is None:
        return (problem or "not valid SQL") + " (the value must be one SQL expression)"
    stmt = statements[0].stmt if len(statements) == 1 else None
    targets = stmt.targetList if isinstance(stmt, ast.SelectStmt) else None
    if (not isinstance(stmt, ast.SelectStmt) or targets is None or len(targets) != 1
            or any(getattr(stmt, clause, None) for clause in _EXPRESSION_CLAUSES)
            or targets[0].name is not None):
        return "not one SQL expression (it must not close the parenthesis around it or add clauses)"
    # A text ending inside a -- comment hides the ')' after it: '1)--' reads as
    # 'select (1)' here, yet swallows whatever follows it in a real query. With a
    # line break before the ')', such a text leaves one ')' too many and fails.
    if _parse(f"select ({text}\n)")[0] is None:
        return "it ends in a -- comment, which would hide what follows it (use /* ... */ or remove it)"
    return _read_only_problem(stmt)


def check_refresh(text: str, *, quote: bool = True) -> str | None:
    """None when ``text`` may run as a refresh, else what is wrong with it.

    A refresh writes (that is its point), but it runs in one transaction that
    watchdog opens, bounds with one deadline and commits: statements that end
    or open transactions (COMMIT, ROLLBACK, BEGIN, PREPARE TRANSACTION) would
    take the rest outside it, so they are refused. With ``quote`` false
    (SQL read from a file) the message never repeats any of ``text``. Never raises.
    """
    if "\x00" in text:
        return "not valid SQL: it contains a NUL character"
    statements, problem = _parse(text, quote)
    if statements is None:
        return problem
    if not statements:
        return "no SQL statement; give the refresh, e.g. 'call analytics.refresh()'"
    for raw in statements:
        if isinstance(raw.stmt, ast.TransactionStmt):
            return ("it ends or opens a transaction (COMMIT, ROLLBACK, BEGIN); the refresh runs in one "
                    "transaction that watchdog commits, so leave these out")
    return None
