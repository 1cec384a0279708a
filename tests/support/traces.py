"""Looking for traces of a patient after erasure: in every column of every row of every
table, whatever the ORM maps."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import inspect, text
from sqlmodel import SQLModel

PHONE_LIKE = re.compile(r"\d[\d\s\-().]{5,}\d")


def fragments(body: str) -> list[str]:
    """Pieces of a text that would betray it if found anywhere after erasure."""
    if len(body) <= 24:
        return [body]
    third = len(body) // 3
    return [body[:24], body[third : third + 24], body[-24:]]


def leftovers(engine: Any, needles: list[str]) -> list[tuple[str, str, str]]:
    """(table, column, needle) for every text value in the database containing a needle.

    Every table the database has (not only the models'), every column of every row:
    a raw SELECT *, so nothing the ORM maps differently is missed."""
    tables = set(inspect(engine).get_table_names()) | set(SQLModel.metadata.tables)
    found: list[tuple[str, str, str]] = []
    lowered = [n.casefold() for n in needles]
    with engine.connect() as connection:
        for table in sorted(tables):
            result = connection.execute(text(f'SELECT * FROM "{table}"'))  # noqa: S608
            columns = list(result.keys())
            for row in result:
                for column, value in zip(columns, row, strict=True):
                    if isinstance(value, bytes | memoryview):
                        value = bytes(value).decode("utf-8", "replace")
                    if not isinstance(value, str):
                        continue
                    haystacks = [value.casefold()] + [
                        re.sub(r"\D", "", run) for run in PHONE_LIKE.findall(value)
                    ]
                    for needle in lowered:
                        if any(needle in haystack for haystack in haystacks):
                            found.append((table, column, needle))
    return found
