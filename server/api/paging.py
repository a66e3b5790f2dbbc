"""Paging query parameters, bounded the same way on every list route.

An unbounded ``page`` or ``offset`` turned into an SQL ``OFFSET`` past the 64-bit range of the database
driver: a 500 instead of the 422 a bad input deserves. With these bounds the schema says what the server
accepts and FastAPI refuses the rest as ``invalid_input`` before any query runs, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

#: The last page any list serves (page x size stays far inside a 64-bit OFFSET).
MAX_PAGE = 1_000_000
#: The largest row offset a list accepts.
MAX_OFFSET = 100_000_000

PageParam = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page number, from 1.")]
OffsetParam = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip.")]
