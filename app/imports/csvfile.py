"""Reading lead files: encoding and delimiter detection, and streaming records.

Files come from spreadsheets and other tools: UTF-8 with or without a BOM, UTF-16 (Excel's
"Unicode text"), Windows-1252 / Latin-1, with a comma, semicolon, tab or pipe between
fields, and quoted fields that hold newlines. Everything here streams: memory does not grow
with the file.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import compress, count, repeat
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple

from app.errors import ValidationProblem

DELIMITERS = (",", ";", "\t", "|")
#: Largest single cell; a longer one is an unbalanced quote swallowing the file.
MAX_CELL = 64 * 1024
_CHUNK = 1 << 20
#: Characters a partition reads at a time from a file without quotes (its lines, their
#: email cells and keys are held at once, a few times this in memory).
_STRETCH = 1 << 18

csv.field_size_limit(MAX_CELL)


@dataclass(frozen=True, slots=True)
class FileFormat:
    #: Python codec name (``utf-8-sig``, ``utf-16``, ``cp1252``, ``latin-1``, …).
    encoding: str
    delimiter: str
    header: list[str]
    #: The file is valid in ``encoding`` except for an incomplete character at its very end
    #: (a file cut off mid-character).
    truncated_character: bool = False


def _bom_encoding(head: bytes) -> str | None:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return None


def _utf16_without_bom(head: bytes) -> str | None:
    if len(head) < 4:
        return None
    even, odd = head[0::2].count(0), head[1::2].count(0)
    half = len(head) // 2
    if odd > half * 0.3 and even < half * 0.05:
        return "utf-16-le"
    if even > half * 0.3 and odd < half * 0.05:
        return "utf-16-be"
    return None


def _decodes(path: Path, encoding: str) -> tuple[bool, bool]:
    """(the whole file decodes, only an incomplete character at the end fails)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                return False, False
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return True, True
    return True, False


def detect_encoding(path: Path) -> tuple[str, bool]:
    with path.open("rb") as handle:
        head = handle.read(4096)
    found = _bom_encoding(head) or _utf16_without_bom(head)
    candidates = [found] if found else ["utf-8", "cp1252", "latin-1"]
    for encoding in candidates:
        ok, truncated = _decodes(path, encoding)
        if ok:
            return encoding, truncated
    if found:
        raise ValidationProblem(f"the file is not valid {found}", field="file")
    return "latin-1", False  # every byte string is valid Latin-1; never reached


def _open(path: Path, encoding: str) -> io.TextIOWrapper:
    # ``replace`` only ever applies to an incomplete last character: detect_encoding has
    # checked the rest of the file.
    return path.open("r", encoding=encoding, errors="replace", newline="")


def _sample(path: Path, encoding: str, size: int = 64 * 1024) -> str:
    with _open(path, encoding) as handle:
        return handle.read(size)


def detect_delimiter(sample: str) -> str:
    """The candidate that splits the first rows into the same number (>1) of columns;
    ties go to the earlier of comma, semicolon, tab, pipe."""
    lines = sample.splitlines(keepends=True)
    if len(lines) > 1 and not sample.endswith(("\n", "\r")):
        sample = "".join(lines[:-1])  # the sample may end mid-record
    best, best_score = ",", -1.0
    for delimiter in DELIMITERS:
        try:
            rows = [r for r in csv.reader(io.StringIO(sample), delimiter=delimiter, strict=False) if r][:50]
        except csv.Error:
            continue
        if not rows or len(rows[0]) < 2:
            continue
        width = len(rows[0])
        consistent = sum(1 for r in rows if len(r) == width) / len(rows)
        score = width * consistent if consistent >= 0.8 else 0.0
        if score > best_score:
            best, best_score = delimiter, score
    return best


def detect(path: Path, *, encoding: str | None = None, delimiter: str | None = None) -> FileFormat:
    truncated = False
    if encoding:
        try:
            codecs.lookup(encoding)
        except LookupError as exc:
            raise ValidationProblem(f"unknown encoding {encoding!r}", field="encoding") from exc
        ok, truncated = _decodes(path, encoding)
        if not ok:
            raise ValidationProblem(f"the file is not valid {encoding}", field="encoding")
    else:
        encoding, truncated = detect_encoding(path)
    sample = _sample(path, encoding)
    if not sample.strip():
        raise ValidationProblem("the file is empty", field="file")
    if delimiter is None:
        delimiter = detect_delimiter(sample)
    elif delimiter not in DELIMITERS:
        raise ValidationProblem("delimiter must be one of , ; tab |", field="delimiter")
    header: list[str] = []
    for row in csv.reader(io.StringIO(sample), delimiter=delimiter, strict=False):
        if any(cell.strip() for cell in row):
            header = [cell.strip().lstrip("\ufeff") for cell in row]
            break
    if not header:
        raise ValidationProblem("the file has no header row", field="file")
    return FileFormat(encoding=encoding, delimiter=delimiter, header=header, truncated_character=truncated)


class Record(NamedTuple):
    #: Spreadsheet row number: the header is row 1. Quoted newlines do not add rows.
    row: int
    cells: list[str]
    #: Set when the CSV syntax of this record is broken (its cells are what could be read).
    error: str | None = None


#: Which raw lines (each a whole record, without its line break) of a file without quotes
#: are wanted: one answer per line, in order.
Owner = Callable[[list[str]], Iterable[bool]]


def records(path: Path, fmt: FileFormat, *, skip: int = 0, owner: Owner | None = None) -> Iterator[Record]:
    """Data records after the header, blank lines left out; ``skip`` data records are
    read but not yielded (to resume).

    ``owner``, for a file without quotes (:func:`has_quotes`): a quick test of the raw
    lines of a stretch of the file. Lines it refuses are counted but not parsed: the
    partitions of an import each read the whole file, and parsing the other partitions'
    rows was most of what that reading cost."""
    if owner is not None:
        yield from _owned_records(path, fmt, skip, owner)
        return
    with _open(path, fmt.encoding) as handle:
        row = 0
        header_seen = False
        for cells, error in _parsed(csv.reader(handle, delimiter=fmt.delimiter, strict=True)):
            # A blank line: no cell holds anything but whitespace (the first cell usually
            # answers it).
            if not error and not (cells and cells[0].strip()) and not any(c.strip() for c in cells):
                continue
            row += 1
            if not header_seen:
                header_seen = True
                continue
            if row - 1 <= skip:
                continue
            yield Record(row, cells, error)


def _owned_records(path: Path, fmt: FileFormat, skip: int, owner: Owner) -> Iterator[Record]:
    """:func:`records` of a file without quotes, where each line is one record (as in
    :func:`count_records`), read a stretch of lines at a time: only the lines ``owner``
    accepts are split into cells. Such a line's cells are what lies between delimiters,
    as the csv reader gives them; a line long enough to hold a cell over the size limit
    goes through the csv reader itself, for its error."""
    delimiter = fmt.delimiter
    row = 0  # the row number of the last line read (the header is row 1)
    with _open(path, fmt.encoding) as handle:
        for lines in _plain_lines(handle, delimiter):
            first = row + 1
            row += len(lines)
            if row <= skip + 1:
                continue  # the header, or resumed past
            if first <= skip + 1:
                lines = lines[skip + 2 - first :]
                first = skip + 2
            numbered = compress(zip(count(first), lines), owner(lines))
            if max(map(len, lines)) <= MAX_CELL:
                mine = list(numbered)
                if mine:
                    numbers, owned = zip(*mine, strict=True)
                    split = map(str.split, owned, repeat(delimiter))
                    # Records made in C (a NamedTuple's own constructor is Python code).
                    yield from map(_new_record, repeat(Record), zip(numbers, split, repeat(None)))
            else:
                for number, line in numbered:
                    cells, error = next(_parsed(csv.reader([line], delimiter=delimiter, strict=True)))
                    yield Record(number, cells, error)


_new_record: Callable[[type[Record], tuple[int, list[str], None]], Record] = tuple.__new__

#: A line break as the csv reader and a file opened with ``newline=""`` see them.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
#: The characters ``str.isspace`` accepts (none is above U+3000): what a line starts with
#: for :func:`_blank` to have to look at it, besides the delimiter.
_WHITESPACE = tuple(c for c in map(chr, range(0x3001)) if c.isspace())


def _plain_lines(handle: io.TextIOWrapper, delimiter: str) -> Iterator[list[str]]:
    """The lines of a file without quotes, a stretch of about ``_STRETCH`` characters at a
    time, without their line breaks (``\\r\\n``, ``\\r`` or ``\\n``) and without blank lines.
    Splitting, and checking for blank lines, are a few calls per stretch rather than
    several per line."""
    starts = frozenset((delimiter, *_WHITESPACE))
    rest = ""
    while True:
        chunk = handle.read(_STRETCH)
        text = rest + chunk
        if not text:
            return
        if chunk:
            # Up to the last line break; a \r at the very end may be half of a \r\n.
            cut = max(text.rfind("\n"), text.rfind("\r", 0, len(text) - 1)) + 1
            if cut == 0:
                rest = text  # a line longer than a stretch
                continue
            body, rest = text[:cut], text[cut:]
        else:
            body, rest = text, ""
        lines = _split_lines(body)
        if body.endswith(("\n", "\r")):
            lines.pop()  # what follows the last line break
        if "" in lines or not starts.isdisjoint(map(itemgetter(0), lines)):
            lines = [line for line in lines if line and not _blank(line, delimiter)]
        if lines:
            yield lines
        if not chunk:
            return


def _split_lines(body: str) -> list[str]:
    """``body`` split at its line breaks. Where they are all of one kind (``\\n``, or
    ``\\r\\n`` as spreadsheets write them), a plain ``str.split``, several
    times faster than the expression that splits at any of them."""
    if "\r" not in body:
        return body.split("\n")
    lines = body.split("\r\n")
    joined = "".join(lines)  # a copy, then two searches: cheaper than counting
    if "\r" not in joined and "\n" not in joined:  # no \r or \n but in a \r\n
        return lines
    return _LINE_BREAK.split(body)


def _blank(line: str, delimiter: str) -> bool:
    """Whether a raw line (never empty) is blank: no cell holds anything but whitespace.
    A line that starts with neither whitespace nor the delimiter is not (the usual case:
    one test, no copy)."""
    first = line[0]
    return (first == delimiter or first.isspace()) and not line.replace(delimiter, "").strip()


def _parsed(reader: Iterator[list[str]]) -> Iterator[tuple[list[str], str | None]]:
    """(cells, None) per record, or ([], what is wrong) for a record the reader refuses;
    reading goes on after it."""
    while True:
        try:
            yield next(reader), None
        except StopIteration:
            return
        except csv.Error as exc:
            yield [], _describe(str(exc))


def _describe(message: str) -> str:
    if "field larger than field limit" in message:
        return f"a cell is longer than {MAX_CELL // 1024} KB (an unbalanced quote?)"
    if "unexpected end of data" in message or "EOF" in message:
        return "the file ends inside a quoted field (was it cut off?)"
    return f"broken CSV syntax: {message}"


def count_records(path: Path, fmt: FileFormat) -> int:
    """How many data records :func:`records` yields, read in one quick pass where the file
    has no quotes (each line is then one record: only a quoted field can hold a line break
    or break the syntax), else by reading every record."""
    if not has_quotes(path, fmt.encoding):
        with _open(path, fmt.encoding) as handle:
            lines = sum(map(len, _plain_lines(handle, fmt.delimiter)))
        return max(lines - 1, 0)  # the header
    return sum(1 for _ in records(path, fmt))


def has_quotes(path: Path, encoding: str) -> bool:
    """Whether the file holds a double quote or a NUL (which the csv reader refuses)."""
    with _open(path, encoding) as handle:
        while chunk := handle.read(1 << 20):
            if '"' in chunk or "\x00" in chunk:
                return True
    return False
