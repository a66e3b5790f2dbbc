"""Move an installation's data to another database: ``modeltrain migrate-db --from URL --to URL``.

Typical use is SQLite -> PostgreSQL when a single-machine installation becomes a distributed one, but
any supported pair works. Steps:

1. open the source without changing it (it must exist and be at this version's schema head);
2. bring the target's schema to head with the normal migrations;
3. refuse a target that already holds rows, unless ``force`` (then its rows are deleted first);
4. copy every table of the models in foreign-key order, in batches, inside ONE target transaction
   (self-references such as ``messages.parent_id`` are filled in by a second pass);
5. compare per-table row counts of source and target before committing; any difference rolls back.

Full-text indexes follow by themselves (SQLite triggers, PostgreSQL expression indexes). Serial
sequences (if a table ever gets an integer key) are advanced past the copied values on PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine, Integer, Table, bindparam, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

import server.db.models  # noqa: F401  (registers every table)
from server.db import migrate
from server.db.base import Base
from server.db.session import create_db_engine, read_only, sqlite_path
from server.errors import Conflict, DomainError, InvalidInput, NotFound, Unavailable

log = logging.getLogger(__name__)

BATCH_ROWS = 1000


class TargetNotEmpty(Conflict):
    code = "target_not_empty"


class TransferMismatch(DomainError):
    status = 500
    code = "transfer_mismatch"


@dataclass
class TransferReport:
    source: str
    target: str
    schema_revision: str
    counts: dict[str, int] = field(default_factory=dict)
    cleared: bool = False

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid URL>"


def _check_url(url: str, which: str) -> None:
    if not url.startswith(("sqlite", "postgresql")):
        raise InvalidInput(
            f"--{which} must be a sqlite:///PATH or postgresql://USER@HOST/DB URL", code="bad_url"
        )
    try:
        make_url(url)
    except ArgumentError:
        raise InvalidInput(f"--{which} is not a valid database URL", code="bad_url") from None


def _open(url: str, which: str) -> Engine:
    try:
        return create_db_engine(url)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise InvalidInput(f"--{which}: {exc}", code="bad_url") from None


def _unreachable(which: str, url: str, exc: DBAPIError) -> Unavailable:
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
    return Unavailable(
        f"cannot use the {which} database {safe_url(url)}: {reason}", code="database_unavailable"
    )


def _copy_order() -> list[Table]:
    return list(Base.metadata.sorted_tables)


def _self_ref_columns(table: Table) -> list[str]:
    return [fk.parent.name for fk in table.foreign_keys if fk.column.table is table]


def _count(conn, table: Table) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


def transfer(
    source_url: str,
    target_url: str,
    *,
    force: bool = False,
    batch_rows: int = BATCH_ROWS,
    progress: Callable[[str, int], None] | None = None,
) -> TransferReport:
    """Copy everything from ``source_url`` to ``target_url``; see the module docstring."""
    _check_url(source_url, "from")
    _check_url(target_url, "to")
    if make_url(source_url) == make_url(target_url):
        raise InvalidInput("--from and --to name the same database", code="same_database")
    src_file = sqlite_path(source_url)
    if source_url.startswith("sqlite") and src_file is not None and not src_file.is_file():
        raise NotFound(f"there is no SQLite database at {src_file}", code="source_missing")

    source = _open(source_url, "from")
    target = _open(target_url, "to")
    try:
        try:
            revision = migrate.current_revision(source)
            source_tables = set(inspect(source).get_table_names())
        except DBAPIError as exc:
            raise _unreachable("source", source_url, exc) from None
        head = migrate.head_revision()
        if revision is None:
            raise InvalidInput(
                f"{safe_url(source_url)} is not a ModelTrain database (no schema version)",
                code="not_modeltrain",
            )
        if revision != head:
            raise Conflict(
                f"the source database is at schema {revision}, this version needs {head}; run "
                "`modeltrain migrate` (or start the server once) against the source first",
                code="source_not_at_head",
            )
        tables = _copy_order()
        missing = [t.name for t in tables if t.name not in source_tables]
        if missing:
            raise InvalidInput(f"the source lacks tables: {', '.join(missing)}", code="not_modeltrain")

        try:
            migrate.upgrade(target)
        except DBAPIError as exc:
            raise _unreachable("target", target_url, exc) from None
        report = TransferReport(safe_url(source_url), safe_url(target_url), head)
        reader = read_only(source)
        if source.dialect.name == "postgresql":  # one consistent snapshot for copy and counts
            reader = reader.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with reader.connect() as src, src.begin(), target.begin() as dst:
            occupied = {t.name: n for t in tables if (n := _count(dst, t))}
            if occupied and not force:
                listing = ", ".join(f"{name} ({n} rows)" for name, n in occupied.items())
                raise TargetNotEmpty(
                    f"the target database already holds data: {listing}; use --force to replace it",
                    detail={"tables": occupied},
                )
            if occupied:
                for table in reversed(tables):
                    dst.execute(table.delete())
                report.cleared = True
            for table in tables:
                copied = _copy_table(src, dst, table, batch_rows)
                report.counts[table.name] = copied
                if progress is not None:
                    progress(table.name, copied)
            if target.dialect.name == "postgresql":
                _advance_sequences(dst, tables)
            wrong = {}
            for table in tables:
                want, have = _count(src, table), _count(dst, table)
                if want != have or have != report.counts[table.name]:
                    wrong[table.name] = {"source": want, "target": have}
            if wrong:
                raise TransferMismatch(
                    "row counts differ after the copy; nothing was committed", detail=wrong
                )
        log.info("copied %d rows from %s to %s", report.total, report.source, report.target)
        return report
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
        raise Unavailable(
            f"the copy failed and nothing was committed: {reason}", code="transfer_failed"
        ) from None
    finally:
        source.dispose()
        target.dispose()


def _copy_table(src, dst, table: Table, batch_rows: int) -> int:
    self_refs = _self_ref_columns(table)
    pk = list(table.primary_key.columns)
    copied = 0
    pending_links: list[dict] = []
    result = src.execution_options(yield_per=batch_rows).execute(select(table).order_by(*pk))
    for rows in result.partitions(batch_rows):
        batch = []
        for row in rows:
            values = dict(row._mapping)
            if self_refs:
                links = {c: values[c] for c in self_refs if values[c] is not None}
                if links:
                    pending_links.append({**{f"k_{c.name}": values[c.name] for c in pk}, **links})
                    for c in links:
                        values[c] = None
            batch.append(values)
        dst.execute(table.insert(), batch)
        copied += len(batch)
    if pending_links:
        for column in self_refs:
            stmt = table.update().where(*[c == bindparam(f"k_{c.name}") for c in pk])
            rows = [
                {**{k: v for k, v in link.items() if k.startswith("k_")}, f"v_{column}": link[column]}
                for link in pending_links
                if column in link
            ]
            for start in range(0, len(rows), batch_rows):
                dst.execute(stmt.values({column: bindparam(f"v_{column}")}), rows[start : start + batch_rows])
    return copied


def _advance_sequences(dst, tables: list[Table]) -> None:
    for table in tables:
        for column in table.primary_key.columns:
            if isinstance(column.type, Integer) and (
                column.autoincrement is True
                or (column.autoincrement == "auto" and len(table.primary_key.columns) == 1)
            ):
                quote = dst.dialect.identifier_preparer.quote
                dst.execute(
                    text(
                        "SELECT setval(pg_get_serial_sequence(:t, :c), "
                        f"COALESCE(MAX({quote(column.name)}), 0) + 1, false) FROM {quote(table.name)}"
                    ).bindparams(t=table.name, c=column.name)
                )
