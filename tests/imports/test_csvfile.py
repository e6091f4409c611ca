"""Reading what spreadsheets write: encodings, delimiters, quoted newlines, broken files."""

from __future__ import annotations

import codecs
from pathlib import Path
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import ValidationProblem
from app.imports import csvfile

ROWS = [
    ["Email Address", "Name", "Notes"],
    ["zoe@example.com", "Zoë Åberg", "likes ß, é and ü"],
    ["li@example.org", "Li Wei", 'said "hello"\nover two lines'],
]


def _text(rows: list[list[str]], delimiter: str) -> str:
    def cell(value: str) -> str:
        if any(ch in value for ch in (delimiter, '"', "\n", "\r")):
            return '"' + value.replace('"', '""') + '"'
        return value

    return "".join(delimiter.join(cell(v) for v in row) + "\r\n" for row in rows)


@pytest.mark.parametrize(
    ("encoding", "bom"),
    [
        ("utf-8", b""),
        ("utf-8", codecs.BOM_UTF8),
        ("utf-16-le", codecs.BOM_UTF16_LE),
        ("utf-16-be", codecs.BOM_UTF16_BE),
        ("utf-16-le", b""),
        ("cp1252", b""),
        ("latin-1", b""),
    ],
)
@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_every_encoding_and_delimiter_reads_the_same_records(
    tmp_path: Path, encoding: str, bom: bytes, delimiter: str
) -> None:
    path = tmp_path / "leads.csv"
    path.write_bytes(bom + _text(ROWS, delimiter).encode(encoding))
    fmt = csvfile.detect(path)
    assert fmt.delimiter == delimiter
    assert fmt.header == ROWS[0]
    got = list(csvfile.records(path, fmt))
    assert [(r.row, r.cells, r.error) for r in got] == [(2, ROWS[1], None), (3, ROWS[2], None)]
    assert csvfile.count_records(path, fmt) == 2


def test_windows_1252_punctuation_is_read_as_such(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("email;name\r\nx@example.com;“Smart” – quotes €\r\n".encode("cp1252"))
    fmt = csvfile.detect(path)
    assert fmt.encoding == "cp1252" and fmt.delimiter == ";"
    assert next(csvfile.records(path, fmt)).cells == ["x@example.com", "“Smart” – quotes €"]


def test_blank_lines_are_skipped_and_rows_keep_spreadsheet_numbers(tmp_path: Path) -> None:
    path = tmp_path / "gaps.csv"
    path.write_text(
        '\r\nemail,name\r\n\r\na@example.com,A\r\n,\r\nb@example.com,"B\r\nB"\r\nc@example.com,C\r\n'
    )
    fmt = csvfile.detect(path)
    assert [(r.row, r.cells[0]) for r in csvfile.records(path, fmt)] == [
        (2, "a@example.com"),
        (3, "b@example.com"),
        (4, "c@example.com"),
    ]
    assert [r.row for r in csvfile.records(path, fmt, skip=2)] == [4]


def test_broken_csv_is_reported_per_record_and_reading_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_text('email,name\r\na@example.com,"A"x\r\nb@example.com,B\r\n')
    fmt = csvfile.detect(path)
    got = list(csvfile.records(path, fmt))
    assert got[0].error and "CSV" in got[0].error
    assert got[-1].cells == ["b@example.com", "B"] and got[-1].error is None


def test_a_runaway_quote_is_reported_not_swallowed_silently(tmp_path: Path) -> None:
    path = tmp_path / "runaway.csv"
    path.write_text('email,name\r\na@example.com,"never closed\r\n' + "x" * (csvfile.MAX_CELL + 10) + "\r\n")
    fmt = csvfile.detect(path)
    errors = [r.error for r in csvfile.records(path, fmt) if r.error]
    assert errors and ("longer than" in errors[0] or "cut off" in errors[0])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"\r\n\r\n", "empty"),
        (
            codecs.BOM_UTF16_LE + "a,b\r\n".encode("utf-16-le") + b"\x00\xdc" + "c".encode("utf-16-le"),
            "not valid",
        ),
    ],
)
def test_unreadable_files_get_a_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(ValidationProblem, match=message):
        csvfile.detect(path)


def test_an_explicit_encoding_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("email\r\nzoë@example.com\r\n".encode("latin-1"))
    with pytest.raises(ValidationProblem, match="not valid utf-8"):
        csvfile.detect(path, encoding="utf-8")
    with pytest.raises(ValidationProblem, match="unknown encoding"):
        csvfile.detect(path, encoding="klingon")
    assert csvfile.detect(path, encoding="latin-1").header == ["email"]


_PIECES = [
    "a",
    "b@example.com",
    "Zoë",
    " ",
    "\t",
    "\u00a0",
    ",",
    ";",
    "\r",
    "\n",
    "\r\n",
    "\x1c",
    "\u2028",
    '"',
    "x",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.lists(st.sampled_from(_PIECES), max_size=60),
    delimiter=st.sampled_from([",", ";", "\t"]),
)
def test_the_quick_count_agrees_with_reading_every_record(
    tmp_path: Path, body: list[str], delimiter: str
) -> None:
    """The progress total is counted in one quick pass when the file has no quotes; it
    must be the number of records the import then reads, blank lines and odd line ends
    included (with quotes, every record is read)."""
    path = tmp_path / "count.csv"
    path.write_bytes(("email,name\r\n" + "".join(body)).replace(",", delimiter).encode("utf-8"))
    fmt = csvfile.FileFormat(encoding="utf-8", delimiter=delimiter, header=["email", "name"])
    assert csvfile.count_records(path, fmt) == sum(1 for _ in csvfile.records(path, fmt))


def test_the_quick_count_is_taken_only_without_quotes(tmp_path: Path) -> None:
    path = tmp_path / "quoted.csv"
    path.write_text('email,notes\r\na@example.com,"two\nlines"\r\nb@example.com,x\r\n', encoding="utf-8")
    fmt = csvfile.detect(path)
    assert csvfile.count_records(path, fmt) == 2  # a line-by-line count would say 3


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.lists(
        st.sampled_from([p for p in _PIECES if p != '"'] + ["B@Example.COM ", "c@example.org"]), max_size=60
    ),
    delimiter=st.sampled_from([",", ";", "\t"]),
    partitions=st.integers(min_value=2, max_value=3),
    skip=st.integers(min_value=0, max_value=3),
    email_at=st.integers(min_value=0, max_value=1),
    stretch=st.sampled_from([1, 2, 3, 5, 8, 13, 1 << 20]),
)
def test_partitions_parse_only_their_own_lines_and_together_read_every_record(
    tmp_path: Path, body: list[str], delimiter: str, partitions: int, skip: int, email_at: int, stretch: int
) -> None:
    """In a file without quotes each import partition parses only the lines whose email
    cell is its own: together they read exactly the records one full reading gives (same
    row numbers, cells and errors), each once, and each in the partition ``partition_of``
    names for its cells — however the file is cut into the stretches it is read in (a
    stretch may end inside a line or between the two characters of a ``\\r\\n``)."""
    from app.imports.service import line_owner, partition_of

    path = tmp_path / "partitions.csv"
    header = ["email", "name"] if email_at == 0 else ["name", "email"]
    path.write_bytes((",".join(header) + "\r\n" + "".join(body)).replace(",", delimiter).encode("utf-8"))
    fmt = csvfile.FileFormat(encoding="utf-8", delimiter=delimiter, header=header)
    assert not csvfile.has_quotes(path, fmt.encoding)
    everything = list(csvfile.records(path, fmt, skip=skip))
    read: list[csvfile.Record] = []
    with patch.object(csvfile, "_STRETCH", stretch):
        for partition in range(partitions):
            owner = line_owner(email_at, delimiter, partitions, partition)
            for record in csvfile.records(path, fmt, skip=skip, owner=owner):
                read.append(record)
                assert partition_of(record.cells, email_at, partitions) == partition
        counted = csvfile.count_records(path, fmt)
    assert sorted(read, key=lambda r: r.row) == everything
    assert counted == sum(1 for _ in csvfile.records(path, fmt))


def test_a_partition_reports_a_cell_over_the_size_limit_in_a_file_without_quotes(tmp_path: Path) -> None:
    """Partitions split plain lines themselves; a line that may hold a cell over the limit
    still gets the csv reader's verdict, as a full reading gives it."""
    from app.imports.service import line_owner

    path = tmp_path / "long.csv"
    path.write_text(
        "email,notes\na@example.com,short\nb@example.com,"
        + "x" * (csvfile.MAX_CELL + 10)
        + "\nc@example.com,ok\n"
    )
    fmt = csvfile.detect(path)
    assert not csvfile.has_quotes(path, fmt.encoding)
    everything = list(csvfile.records(path, fmt))
    assert [r.row for r in everything] == [2, 3, 4]
    assert everything[1].error is not None and "longer than 64 KB" in everything[1].error
    read = [
        record
        for partition in range(2)
        for record in csvfile.records(path, fmt, owner=line_owner(0, ",", 2, partition))
    ]
    assert sorted(read, key=lambda r: r.row) == everything


def test_the_whitespace_a_blank_line_may_start_with_is_all_of_it() -> None:
    import sys

    assert tuple(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()) == csvfile._WHITESPACE
