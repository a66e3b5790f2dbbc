"""sqlite-vec (the ``vec0`` virtual table and ``vec_*`` functions) in every SQLite connection of the process.

Python's ``sqlite3`` module may be built without ``enable_load_extension`` (the pyenv build CI and the
package use is), so the extension is not loaded per connection: SQLite's C API ``sqlite3_auto_extension``
registers its entry point once, for every connection opened afterwards in the process, through the SQLite
library ``_sqlite3`` itself links (``libsqlite3`` is a shared library there: opening it again by name gives
the same instance). :func:`register` checks that it is that instance (same version, and a fresh in-memory
connection answers ``vec_version()``); where it cannot (a Python with SQLite linked in statically, the
package missing, an unknown platform), it logs why once and :func:`available` stays false: the knowledge
index then keeps its vectors in process (services/knowledge/index.py, docs/knowledge.md).

Called by ``create_db_engine`` for the first SQLite engine, never at import."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sqlite3
import sys
import threading

log = logging.getLogger(__name__)

_lock = threading.Lock()
#: None: not tried yet; then whether the extension is registered.
_registered: bool | None = None
#: The loaded libraries, kept for the life of the process (the registered entry point lives in one).
_libraries: list[ctypes.CDLL] = []


def _sqlite_library_names() -> list[str]:
    if sys.platform == "win32":
        names = ["sqlite3.dll"]
    elif sys.platform == "darwin":
        names = ["libsqlite3.dylib", "libsqlite3.0.dylib"]
    else:
        names = ["libsqlite3.so.0", "libsqlite3.so"]
    found = ctypes.util.find_library("sqlite3")
    if found and found not in names:
        names.append(found)
    return names


def _extension_suffix() -> str:
    if sys.platform == "win32":
        return ".dll"
    return ".dylib" if sys.platform == "darwin" else ".so"


def _vec_works() -> str | None:
    """The version a fresh in-memory connection reports, or None."""
    conn = sqlite3.connect(":memory:")
    try:
        return str(conn.execute("SELECT vec_version()").fetchone()[0])
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def _try_register() -> tuple[bool, str]:
    try:
        import sqlite_vec  # only where a SQLite engine is made
    except ImportError:
        return False, "the sqlite-vec package is not installed"
    if _vec_works() is not None:
        return True, "already available"
    try:
        extension = ctypes.CDLL(sqlite_vec.loadable_path() + _extension_suffix())
        entry = ctypes.cast(extension.sqlite3_vec_init, ctypes.c_void_p)
    except (OSError, AttributeError) as exc:
        return False, f"vec0 could not be loaded ({exc.__class__.__name__})"
    for name in _sqlite_library_names():
        try:
            library = ctypes.CDLL(name)
            library.sqlite3_libversion.restype = ctypes.c_char_p
            version = library.sqlite3_libversion().decode()
        except (OSError, AttributeError):
            continue
        if version != sqlite3.sqlite_version:
            continue
        library.sqlite3_auto_extension.argtypes = [ctypes.c_void_p]
        library.sqlite3_cancel_auto_extension.argtypes = [ctypes.c_void_p]
        if library.sqlite3_auto_extension(entry) != 0:
            continue
        if _vec_works() is not None:
            _libraries.extend([library, extension])
            return True, f"registered through {name}"
        # Another copy of SQLite than the one Python uses: undo, try the next name.
        library.sqlite3_cancel_auto_extension(entry)
    return False, "Python's SQLite library could not be reached (linked in statically?)"


def register() -> bool:
    """Register sqlite-vec for every SQLite connection opened from now on (idempotent, thread-safe);
    whether it is available."""
    global _registered
    with _lock:
        if _registered is None:
            ok, why = _try_register()
            _registered = ok
            if ok:
                log.debug("sqlite-vec: %s", why)
            else:
                log.warning("sqlite-vec unavailable (%s): the knowledge index keeps vectors in memory", why)
        return _registered


#: The triggers that keep sqlite-vec's tables in step (services/knowledge/index.py) call its functions.
_VEC_TRIGGERS = (
    "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'knowledge\\_vec\\_%' ESCAPE '\\'"
)


def drop_vec_triggers(dbapi_connection: sqlite3.Connection, _record: object = None) -> None:
    """Without sqlite-vec, a database that had it: drop the triggers that feed its tables (they would fail
    every insert and delete of a chunk with "no such function"); the tables stay and are made again from the
    chunks by the next process that has sqlite-vec. The first connection of an engine runs this."""
    try:
        names = [row[0] for row in dbapi_connection.execute(_VEC_TRIGGERS).fetchall()]
        for name in names:
            dbapi_connection.execute(f'DROP TRIGGER IF EXISTS "{name}"')
        if names:
            dbapi_connection.commit()
            log.warning(
                "sqlite-vec unavailable: the knowledge index's triggers were dropped (%d)", len(names)
            )
    except sqlite3.Error as exc:
        log.warning("sqlite-vec unavailable: its triggers could not be dropped (%s)", exc.__class__.__name__)


def available() -> bool:
    """Whether SQLite connections have sqlite-vec (false until :func:`register` ran)."""
    return bool(_registered)
