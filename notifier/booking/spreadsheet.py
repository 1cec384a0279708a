"""A CSV file as spreadsheets save it: decoded, its separator found, its header checked,
and each row with the line it starts on.

Accepted: UTF-8 with or without a byte order mark (Excel's "CSV UTF-8"), any line
ending, commas, semicolons or tabs (the separator of the spreadsheet's locale), quoted
cells over several lines, empty rows. Refused whole, saying why: an empty file, a
header without rows or with unknown, repeated or missing columns, another encoding,
a workbook, NUL bytes, an unclosed quote.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DELIMITERS = (",", ";", "\t")
SAVE_AS = "save it from the spreadsheet as 'CSV UTF-8'"


class SheetError(Exception):
    """The file as a whole cannot be read (encoding, header): nothing is imported."""


@dataclass(frozen=True)
class RowError:
    """A bad row: its line in the file, the column at fault ("(row)" for the row as a
    whole) and what is wrong."""

    line: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.column}: {self.message}"


@dataclass(frozen=True)
class Record:
    """A row as read: its first line in the file and its cells by column."""

    line: int
    cells: Mapping[str, str]


@dataclass(frozen=True)
class Sheet:
    """A CSV file read: the columns its header names, its rows, and rows that did not
    have one cell per column."""

    columns: tuple[str, ...]
    records: list[Record]
    errors: list[RowError]


def read_sheet(data: bytes, columns: Sequence[str], required: Sequence[str]) -> Sheet:
    """The file's header and rows, or `SheetError` saying what is wrong with it. The
    header must name some of `columns` (in any order, any case), all of `required`."""
    text = _decode(data)
    lines = text.splitlines(keepends=True)
    header_line = next((line for line in lines if line.strip()), None)
    if header_line is None:
        raise SheetError("the file is empty: its first line must be the header row")
    delimiter = _delimiter(header_line, columns)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows = list(_numbered(reader))
    header_at, header = rows[0]
    named = _header(header, header_at, columns, required)
    records, errors = [], []
    for line, cells in rows[1:]:
        if not any(cell.strip() for cell in cells):
            continue  # a blank line, or a spreadsheet's empty row (",,,,")
        if len(cells) != len(named):
            message = f"has {len(cells)} fields, the header names {len(named)}"
            errors.append(RowError(line, "(row)", message))
            continue
        records.append(Record(line, dict(zip(named, cells, strict=True))))
    if not records and not errors:
        raise SheetError("no rows below the header: nothing to import")
    return Sheet(named, records, errors)


def _decode(data: bytes) -> str:
    if not data.strip():
        raise SheetError("the file is empty: its first line must be the header row")
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise SheetError(f"the file is UTF-32 text, not UTF-8: {SAVE_AS}")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise SheetError(f"the file is UTF-16 text, not UTF-8: {SAVE_AS}")
    if data.startswith(b"PK\x03\x04"):
        raise SheetError(f"the file is a spreadsheet workbook (.xlsx), not CSV: {SAVE_AS}")
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise SheetError(f"line {line}: a NUL byte: this is not a CSV text file")
    try:
        # A UTF-8 byte order mark (Excel's "CSV UTF-8" writes one) is not part of the header.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        byte = data[error.start]
        raise SheetError(f"line {line}: byte 0x{byte:02X} is not UTF-8: {SAVE_AS}") from None


def _delimiter(header_line: str, columns: Sequence[str]) -> str:
    """The separator that splits the header into the most known column names."""

    def known(delimiter: str) -> int:
        names = next(csv.reader([header_line], delimiter=delimiter), [])
        return sum(_name(n) in columns for n in names)

    return max(DELIMITERS, key=known)  # ties: the first, a comma


def _numbered(reader: Any) -> Iterator[tuple[int, list[str]]]:
    """Each row with the line it starts on (a quoted cell may span lines)."""
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            hint = " (a quoted cell is never closed)" if "end of data" in str(error) else ""
            raise SheetError(f"line {start}: not CSV: {error}{hint}") from None
        yield start, cells


def _name(cell: str) -> str:
    return cell.strip().lower()


def _header(
    header: Sequence[str], line: int, columns: Sequence[str], required: Sequence[str]
) -> tuple[str, ...]:
    names = tuple(_name(cell) for cell in header)
    problems = []
    unknown = [n for n in names if n not in columns]
    if unknown:
        problems.append("unknown column(s) " + ", ".join(repr(n) for n in unknown))
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        problems.append("column(s) named twice: " + ", ".join(repeated))
    missing = [n for n in required if n not in names]
    if missing:
        problems.append("missing required column(s) " + ", ".join(missing))
    if problems:
        raise SheetError(
            f"line {line}: the header row must name the columns ({', '.join(columns)}; "
            f"required: {', '.join(required)}): " + "; ".join(problems)
        )
    return names
