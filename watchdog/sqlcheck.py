"""Is this SQL one read-only query? Checked with PostgreSQL's own parser (pglast wraps libpg_query).

Rule files are written by on-call engineers, who may query the warehouse but
not change it, nor act on the server. Run time keeps a read-only
transaction, but that alone is not enough: ``commit; insert ...`` ends it
from inside a multi-statement string, and functions act outside any
transaction (``pg_terminate_backend``, advisory locks) or run SQL given as
text (``ts_stat('select ...')``, ``query_to_xml``), which no check of the
query's text can see. A list of refused names can never be complete, so
this is an allow-list:

- the statement is one ``SELECT`` / ``WITH ... SELECT`` / ``VALUES`` /
  ``TABLE``, built only of the parse-tree nodes a read-only query needs
  (``ALLOWED_NODES``): no data-modifying CTE, no ``SELECT INTO``, no
  ``FOR UPDATE``, no parameters, no ``TABLESAMPLE``, no XML;
- every function it calls is a built-in that only computes a value
  (``ALLOWED_FUNCTIONS``: aggregates, window functions, arithmetic, text,
  dates, arrays, JSON), or one the operator grants in the config
  (``rule_sql_functions``: ``name``, ``schema.name`` or ``schema.*``);
- every operator is a built-in one (``ALLOWED_OPERATORS``), every cast is to
  a built-in type (``ALLOWED_TYPES``), and no relation read is one of the
  catalogs that hold secrets (``SECRET_RELATIONS``, e.g. ``pg_authid``).

``check_query(text)`` checks one query, ``check_expression(text)`` one scalar
SQL expression (a ``loaded_at`` expression, a ``where`` filter) that cannot
close a parenthesis it did not open nor comment out what follows it (compose
it into a query as ``(`` + text + ``)``, exactly as it was checked), and
``check_refresh`` / ``refresh_grant_problem`` the SQL of a remediation's
refresh, which writes, but only what the config's ``rule_refresh_sql`` lists.

Each returns None when the text is acceptable, else one sentence saying what
is wrong, written for the rule author. None raises for any input string.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream

# Built-in functions that compute a value from their arguments and nothing else:
# no side effect, no SQL given as text, no access to files, sessions or settings.
ALLOWED_FUNCTIONS = frozenset({
    # aggregates
    "count", "sum", "avg", "min", "max", "bool_and", "bool_or", "every", "string_agg", "array_agg", "bit_and",
    "bit_or", "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp", "percentile_cont",
    "percentile_disc", "mode", "corr", "covar_pop", "covar_samp", "regr_slope", "regr_intercept", "regr_count",
    "json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg", "any_value",
    # window functions
    "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead", "first_value",
    "last_value", "nth_value",
    # numbers
    "abs", "ceil", "ceiling", "floor", "round", "trunc", "sign", "sqrt", "cbrt", "exp", "ln", "log", "log10",
    "power", "pow", "mod", "div", "width_bucket", "scale", "pi", "degrees", "radians", "num_nulls", "num_nonnulls",
    "greatest", "least", "isfinite",
    # text
    "length", "char_length", "character_length", "octet_length", "bit_length", "lower", "upper", "initcap", "btrim",
    "ltrim", "rtrim", "substr", "substring", "left", "right", "replace", "split_part", "position", "strpos",
    "overlay", "concat", "concat_ws", "lpad", "rpad", "reverse", "starts_with", "translate", "ascii", "chr",
    "regexp_replace", "regexp_match", "regexp_matches", "regexp_like", "regexp_count", "regexp_substr",
    "regexp_instr", "regexp_split_to_array", "regexp_split_to_table", "format", "md5", "to_char", "to_number",
    "quote_ident", "quote_literal", "quote_nullable", "encode", "decode", "string_to_array", "array_to_string",
    "similar_to_escape", "pg_collation_for", "normalize", "is_normalized",
    # dates and times
    "now", "clock_timestamp", "statement_timestamp", "transaction_timestamp", "date_trunc", "date_part",
    "extract", "age", "make_date", "make_time", "make_timestamp", "make_timestamptz", "make_interval",
    "justify_days", "justify_hours", "justify_interval", "to_date", "to_timestamp", "date_bin", "timezone",
    # arrays and sets
    "array_length", "cardinality", "unnest", "array_position", "array_positions", "array_remove", "array_replace",
    "array_append", "array_prepend", "array_cat", "array_lower", "array_upper", "array_ndims", "array_dims",
    "generate_series", "generate_subscripts",
    # JSON
    "json_extract_path", "json_extract_path_text", "jsonb_extract_path", "jsonb_extract_path_text",
    "json_array_length", "jsonb_array_length", "json_typeof", "jsonb_typeof", "json_build_object",
    "jsonb_build_object", "json_build_array", "jsonb_build_array", "to_json", "to_jsonb", "json_each",
    "jsonb_each", "json_each_text", "jsonb_each_text", "json_object_keys", "jsonb_object_keys",
    "json_array_elements", "jsonb_array_elements", "json_array_elements_text", "jsonb_array_elements_text",
    "jsonb_strip_nulls", "jsonb_set", "jsonb_insert", "jsonb_pretty",
})

# Functions known to act beyond the query or to run SQL given as text: refused like any function not
# allowed, but their message does not suggest granting them.
ACTING_FUNCTIONS = frozenset({
    "set_config", "pg_cancel_backend", "pg_terminate_backend", "pg_reload_conf", "pg_rotate_logfile", "pg_promote",
    "pg_switch_wal", "pg_notify", "nextval", "setval", "pg_read_file", "pg_read_binary_file", "pg_ls_dir",
    "pg_stat_file", "lo_import", "lo_export", "lo_unlink", "query_to_xml", "query_to_xml_and_xmlschema",
    "query_to_xmlschema", "cursor_to_xml", "database_to_xml", "database_to_xml_and_xmlschema", "schema_to_xml",
    "table_to_xml", "ts_stat", "ts_rewrite", "dblink", "dblink_exec",
})
ACTING_PREFIXES = ("pg_advisory", "pg_try_advisory", "pg_stat_reset", "pg_replication_", "pg_create_", "pg_drop_",
                   "pg_logical_", "pg_ls_", "lo_", "dblink", "pg_file_")

# Built-in operators (by symbol); a user-defined operator may run any function.
ALLOWED_OPERATORS = frozenset({
    "=", "<>", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "^", "||", "|/", "||/", "@", "&", "|", "#",
    "~", "<<", ">>", "~~", "!~~", "~~*", "!~~*", "~*", "!~", "!~*", "@>", "<@", "&&", "->", "->>", "#>", "#>>",
    "?", "?|", "?&", "@?", "@@", "#-", "BETWEEN", "NOT BETWEEN", "BETWEEN SYMMETRIC", "NOT BETWEEN SYMMETRIC",
})

# Built-in types a value may be cast to (a cast to another type may run that type's functions).
ALLOWED_TYPES = frozenset({
    "int2", "int4", "int8", "smallint", "integer", "int", "bigint", "numeric", "decimal", "float4", "float8", "real",
    "text", "varchar", "bpchar", "char", "name", "bool", "boolean", "date", "time", "timetz", "timestamp",
    "timestamptz", "interval", "json", "jsonb", "uuid", "inet", "cidr", "money", "bytea", "bit", "varbit",
})

# Catalogs whose rows are secrets (password hashes, user mappings with passwords, connection strings, sampled
# column values): a superuser role could read them, and a rule has no business doing so.
SECRET_RELATIONS = frozenset({
    "pg_authid", "pg_shadow", "pg_user_mapping", "pg_user_mappings", "pg_largeobject", "pg_statistic",
    "pg_subscription", "pg_hba_file_rules", "pg_ident_file_mappings", "pg_file_settings",
})

# The parse-tree nodes of a read-only query; any other (a write, a parameter, XML, TABLESAMPLE...) is refused.
ALLOWED_NODES: frozenset[type[ast.Node]] = frozenset({
    ast.RawStmt, ast.SelectStmt, ast.ResTarget, ast.ColumnRef, ast.A_Const, ast.A_Expr, ast.BoolExpr,
    ast.FuncCall, ast.TypeCast, ast.TypeName, ast.RangeVar, ast.JoinExpr, ast.RangeSubselect, ast.RangeFunction,
    ast.SubLink, ast.CaseExpr, ast.CaseWhen, ast.CoalesceExpr, ast.MinMaxExpr, ast.NullTest, ast.BooleanTest,
    ast.SortBy, ast.WindowDef, ast.CommonTableExpr, ast.WithClause, ast.Alias, ast.String, ast.Integer, ast.Float,
    ast.Boolean, ast.BitString, ast.A_Star, ast.A_Indirection, ast.A_Indices, ast.A_ArrayExpr, ast.RowExpr,
    ast.SQLValueFunction, ast.GroupingSet, ast.GroupingFunc, ast.CollateClause, ast.NamedArgExpr, ast.ColumnDef,
})

# How a function the config grants is written: name, schema.name, or schema.* (every function of a schema).
GRANT_PATTERN = re.compile(r"^[a-z_][a-z0-9_$]*(\.([a-z_][a-z0-9_$]*|\*))?$")

_WRITES = {
    ast.InsertStmt: "INSERT", ast.UpdateStmt: "UPDATE", ast.DeleteStmt: "DELETE", ast.MergeStmt: "MERGE",
}
_NODE_WORDS = {
    ast.ParamRef: "a parameter ($1)", ast.RangeTableSample: "TABLESAMPLE", ast.RangeTableFunc: "XMLTABLE",
    ast.XmlExpr: "an XML function", ast.XmlSerialize: "XMLSERIALIZE", ast.MultiAssignRef: "a multiple assignment",
}
_EXPRESSION_CLAUSES = ("fromClause", "whereClause", "groupClause", "havingClause", "windowClause", "sortClause",
                       "limitCount", "limitOffset", "lockingClause", "withClause", "intoClause", "distinctClause",
                       "valuesLists", "larg", "rarg")
_GRANT_HINT = "rule_sql_functions"


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


def _names(parts: Any) -> list[str]:
    return [str(getattr(p, "sval", "")) for p in parts or ()]


def _builtin_name(names: list[str]) -> str | None:
    """The name ``names`` gives a built-in: ``[name]`` or ``["pg_catalog", name]``; None when another schema
    qualifies it (a built-in of that name is not what it calls)."""
    if len(names) == 1 or (len(names) == 2 and names[0] == "pg_catalog"):
        return names[-1]
    return None


def function_allowed(parts: list[str], granted: Collection[str] = ()) -> bool:
    """Whether a call of the function named ``parts`` (``[name]`` or ``[schema, name]``) may run in a rule's SQL.

    Built-ins of ``ALLOWED_FUNCTIONS`` are allowed unqualified or in
    ``pg_catalog``; ``granted`` (the config's ``rule_sql_functions``) adds
    ``name``, ``schema.name`` and ``schema.*`` entries.
    """
    if _builtin_name(parts) in ALLOWED_FUNCTIONS:
        return True
    if len(parts) == 1:
        return parts[0] in granted
    if len(parts) == 2:
        schema, name = parts
        return f"{schema}.{name}" in granted or f"{schema}.*" in granted
    return False


def _function_problem(call: ast.FuncCall, granted: Collection[str]) -> str | None:
    parts = _names(call.funcname)
    if function_allowed(parts, granted):
        return None
    shown = _builtin_name(parts) or ".".join(parts)
    if shown in ACTING_FUNCTIONS or shown.startswith(ACTING_PREFIXES):
        return f"function {shown}() has side effects or runs SQL from text; it is not allowed here"
    return (f"function {shown}() is not allowed in a rule's SQL: only built-in functions that compute a value are "
            f"(README, 'SQL from rule files'); the operator may allow it in the config with "
            f"{_GRANT_HINT}: [{shown}]")


def _operator_problem(names: list[str]) -> str | None:
    if _builtin_name(names) in ALLOWED_OPERATORS:
        return None
    return f"operator {'.'.join(names)} is not a built-in operator; only built-in operators are allowed"


def _type_problem(type_name: ast.TypeName) -> str | None:
    names = _names(type_name.names)
    if _builtin_name(names) in ALLOWED_TYPES:
        return None
    return (f"a cast to type {'.'.join(names)}, which is not a built-in type watchdog allows; cast to one such as "
            "text, numeric, bigint, timestamptz or date")


def _read_only_problem(root: ast.Node, granted: Collection[str] = ()) -> str | None:
    """What in the tree under ``root`` could write or act; None when nothing."""
    for node in _nodes(root):
        kind = type(node)
        if kind in _WRITES:
            return f"it contains {_WRITES[kind]} (a data-modifying WITH); only queries that read are allowed"
        if kind not in ALLOWED_NODES:
            what = _NODE_WORDS.get(kind, kind.__name__)
            return f"it uses {what}, which a read-only check does not need; only plain queries are allowed"
        if isinstance(node, ast.SelectStmt):
            if node.intoClause is not None:
                return "SELECT INTO creates a table; only queries that read are allowed"
            if node.lockingClause:
                return "FOR UPDATE/FOR SHARE locks rows; only queries that read are allowed"
        elif isinstance(node, ast.FuncCall):
            problem = _function_problem(node, granted)
            if problem is not None:
                return problem
        elif isinstance(node, ast.A_Expr):
            problem = _operator_problem(_names(node.name))
            if problem is not None:
                return problem
        elif isinstance(node, ast.SortBy) and node.useOp:
            problem = _operator_problem(_names(node.useOp))
            if problem is not None:
                return problem
        elif isinstance(node, ast.TypeName):
            problem = _type_problem(node)
            if problem is not None:
                return problem
        elif isinstance(node, ast.RangeVar) and str(node.relname).lower() in SECRET_RELATIONS:
            return f"it reads {node.relname}, a catalog that holds secrets; a rule may not read it"
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


def check_query(text: str, functions: Collection[str] = ()) -> str | None:
    """None when ``text`` is exactly one read-only query, else what is wrong with it.

    ``functions`` are the config's ``rule_sql_functions`` (allowed besides
    the built-ins; see ``function_allowed``). Given any string; returns a message such as "it holds 3 statements;
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
    return _read_only_problem(stmt, functions)


def check_expression(text: str, functions: Collection[str] = ()) -> str | None:
    """None when ``text`` is one read-only SQL expression, else what is wrong with it.

    The text is checked as it will run: inside parentheses, ``(text)``; so it
    can neither close them, nor end in a ``--`` comment, nor add clauses
    (``1) from t where (true`` is refused). Subqueries are allowed under the
    rules of ``check_query``, as are ``functions``. Never raises.
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
    return _read_only_problem(stmt, functions)


def _normal(stmt: ast.Node | None) -> str | None:
    """One statement as pglast writes it back: the same for any spacing, case of keywords and comments."""
    if stmt is None:
        return None
    try:
        return str(RawStream()(stmt))
    except Exception:  # a statement pglast cannot write back is never equal to a listed one
        return None


PROCEDURE_PATTERN = re.compile(r"^[a-z_][a-z0-9_$]*(\.[a-z_][a-z0-9_$]*)?$")


@dataclass(frozen=True)
class RefreshGrant:
    """What the config's ``rule_refresh_sql`` lets a refresh run.

    ``statements`` are listed statements after normalisation (see
    ``_normal``); ``procedures`` are procedure names (``analytics.refresh``)
    that a refresh may ``CALL`` with constant arguments.
    """

    statements: frozenset[str] = frozenset()
    procedures: frozenset[str] = frozenset()

    @classmethod
    def from_entries(cls, entries: Collection[str]) -> RefreshGrant:
        """Build from the config's entries (each checked by ``refresh_entry_problem``; others are skipped)."""
        statements: set[str] = set()
        procedures: set[str] = set()
        for entry in entries:
            if PROCEDURE_PATTERN.match(entry.strip()):
                procedures.add(entry.strip())
                continue
            parsed, _ = _parse(entry)
            for raw in parsed or ():
                normal = _normal(raw.stmt)
                if normal is not None:
                    statements.add(normal)
        return cls(frozenset(statements), frozenset(procedures))


def refresh_entry_problem(entry: str) -> str | None:
    """None when ``entry`` of ``rule_refresh_sql`` is a procedure name or SQL statements, else what is wrong."""
    if PROCEDURE_PATTERN.match(entry.strip()):
        return None
    parsed, problem = _parse(entry)
    if parsed is None:
        return f"neither a procedure name (analytics.refresh) nor SQL: {problem}"
    if not parsed:
        return "no SQL statement; give a statement ('call analytics.refresh()') or a procedure name"
    if any(_normal(raw.stmt) is None for raw in parsed):
        return "a statement watchdog cannot compare; list it in another form or as a procedure name"
    return None


def _constant(node: Any) -> bool:
    if isinstance(node, ast.A_Const):
        return True
    if isinstance(node, ast.TypeCast):
        return _constant(node.arg) and node.typeName is not None and _type_problem(node.typeName) is None
    if isinstance(node, ast.NamedArgExpr):
        return _constant(node.arg)
    return False


def _granted(stmt: ast.Node | None, grant: RefreshGrant) -> bool:
    if isinstance(stmt, ast.CallStmt) and stmt.funccall is not None:
        name = ".".join(_names(stmt.funccall.funcname))
        if name in grant.procedures and all(_constant(arg) for arg in stmt.funccall.args or ()):
            return True
    return _normal(stmt) in grant.statements


def check_refresh(text: str, *, quote: bool = True, grant: RefreshGrant | None = None) -> str | None:
    """None when ``text`` may run as a refresh, else what is wrong with it.

    A refresh writes (that is its point), but it runs in one transaction that
    watchdog opens, bounds with one deadline and commits: statements that end
    or open transactions (COMMIT, ROLLBACK, BEGIN, PREPARE TRANSACTION) would
    take the rest outside it, so they are refused. What it writes is the
    operator's decision: with ``grant`` (the config's ``rule_refresh_sql``),
    every statement must be one listed there (compared after normalisation)
    or a ``CALL`` of a listed procedure with constant arguments. With
    ``quote`` false (SQL read from a file) the message never repeats any of
    ``text``. Never raises.
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
    if grant is None:
        return None
    for number, raw in enumerate(statements, 1):
        if not _granted(raw.stmt, grant):
            which = f"statement {number} of {len(statements)}" if len(statements) > 1 else "this statement"
            shown = f" ({_clip(_normal(raw.stmt) or _statement_name(raw.stmt))})" if quote else ""
            return (f"{which}{shown} is not one the config lets a refresh run: a refresh writes only what the operator "
                    f"lists in 'rule_refresh_sql' (statements, or procedure names such as analytics.refresh); ask "
                    "the operator to add it")
    return None


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"
