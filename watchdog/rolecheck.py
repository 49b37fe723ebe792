"""The warehouse role: is the connection that rules' SQL runs on able to do more than read?

The allow-list in ``watchdog.sqlcheck`` and the read-only transactions keep
a rule's SQL from writing, but both are checks of ours; the database's own
grants are the check that cannot be talked around. A superuser, or a role
that can write the schemas it reads, turns any gap in ours into a write (or
worse: a superuser reads ``pg_authid`` and files on the server). So at start
and at ``validate`` watchdog asks each postgres source that freshness and
sql_value rules use what its role may do, and names a risk as a warning with
the fix (README, "The warehouse role").

``role_warnings`` is pure (a ``RoleFacts`` in, sentences out);
``check_sources`` does the I/O, one short query per source, and never raises.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from watchdog.config import Config
from watchdog.config import PostgresSource as PostgresConfig
from watchdog.logfmt import log
from watchdog.rule import Rule

logger = logging.getLogger("watchdog.rolecheck")

# Rule types whose SQL comes from rule files and must only read.
READING_TYPES = frozenset({"freshness", "sql_value"})
FIX = ("give watchdog's checks a role that can only read, e.g. CREATE ROLE watchdog_reader LOGIN; GRANT "
       "pg_read_all_data TO watchdog_reader (or GRANT USAGE ON SCHEMA s and GRANT SELECT ON ALL TABLES IN SCHEMA s "
       "for each schema the rules read); a refresh that writes can use a postgres source of its own (README, "
       "'The warehouse role')")

# What the connected role may do: superuser, and each non-system schema where it may create objects or
# insert, update, delete or truncate some table (a view or a foreign table writes through too).
ROLE_QUERY = """
select current_user, r.rolsuper,
       coalesce((select array_agg(n.nspname::text order by n.nspname) from pg_namespace n
                 where n.nspname <> 'information_schema' and n.nspname not like 'pg\\_%'
                   and (has_schema_privilege(n.oid, 'CREATE')
                        or exists (select 1 from pg_class c
                                   where c.relnamespace = n.oid and c.relkind in ('r', 'p', 'v', 'f')
                                     and (has_table_privilege(c.oid, 'INSERT') or has_table_privilege(c.oid, 'UPDATE')
                                          or has_table_privilege(c.oid, 'DELETE')
                                          or has_table_privilege(c.oid, 'TRUNCATE'))))), '{}')
from pg_roles r where r.rolname = current_user
"""


@dataclass(frozen=True)
class RoleFacts:
    """What one source's role may do, as the database says (or why it could not be asked)."""

    source: str
    role: str = ""
    superuser: bool = False
    writable: tuple[str, ...] = ()  # schemas it can write
    error: str | None = None  # the role could not be checked


def role_warnings(facts: RoleFacts) -> list[str]:
    """The warnings for one source: a superuser, or schemas its role can write, each with the fix; none when it only reads."""
    where = f"postgres source '{facts.source}'"
    if facts.error is not None:
        return [f"{where}: could not check what its role may do ({facts.error})"]
    if facts.superuser:
        return [f"{where}: role '{facts.role}' is a superuser, so SQL from rule files runs with every right on the "
                f"server; {FIX}"]
    if facts.writable:
        shown = ", ".join(facts.writable[:10]) + (f" and {len(facts.writable) - 10} more" if len(facts.writable) > 10 else "")
        return [f"{where}: role '{facts.role}' can write schema(s) {shown} (create, insert, update, delete or "
                f"truncate), so SQL from rule files runs as a role that could change the warehouse; {FIX}"]
    return []


def reading_sources(config: Config, rules: Iterable[Rule]) -> list[PostgresConfig]:
    """The postgres sources that rules with SQL from rule files (freshness, sql_value) read, by name."""
    names = sorted({str(getattr(rule.options, "source", "")) for rule in rules if rule.type in READING_TYPES})
    found = [config.sources.get(name) for name in names]
    return [source for source in found if isinstance(source, PostgresConfig)]


def probe(source: PostgresConfig) -> RoleFacts:
    """Ask the database what the source's role may do; the error in words when it cannot be asked. Never raises."""
    from watchdog.sources.postgres import PostgresSource, QueryError

    connection = PostgresSource(source)
    try:
        rows = connection.query(ROLE_QUERY)
    except QueryError as exc:
        return RoleFacts(source.name, error=str(exc))
    except Exception as exc:  # whatever the driver raises, a check of the role never stops watchdog
        return RoleFacts(source.name, error=type(exc).__name__)
    finally:
        connection.close()
    if not rows:
        return RoleFacts(source.name, error="the role was not found in pg_roles")
    role, superuser, writable = rows[0]
    return RoleFacts(source.name, role=str(role), superuser=bool(superuser), writable=tuple(str(s) for s in writable or ()))


def check_sources(config: Config, rules: Iterable[Rule]) -> list[str]:
    """Every warning about the roles of the sources rules read (see ``role_warnings``), one probe per source."""
    warnings: list[str] = []
    for source in reading_sources(config, rules):
        warnings += role_warnings(probe(source))
    return warnings


def log_in_background(config: Config, rules: Iterable[Rule]) -> threading.Thread:
    """``check_sources`` in a thread of its own (a slow database never delays the start); each warning logged."""
    chosen = list(rules)

    def work() -> None:
        for warning in check_sources(config, chosen):
            log(logger, logging.WARNING, "warehouse role", warning=warning)

    thread = threading.Thread(target=work, name="watchdog-rolecheck", daemon=True)
    thread.start()
    return thread

