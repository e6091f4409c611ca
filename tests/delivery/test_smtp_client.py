"""The SMTP client's reply reader: replies to pipelined commands, one-line or multi-line,
however the server's bytes are cut into reads, come back whole and in order; a malformed
line is refused."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.delivery.smtp_client import FastSmtpClient, Reply, SmtpProtocolError

_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=20
)
_REPLIES = st.lists(
    st.tuples(st.integers(200, 599), st.lists(_TEXT, min_size=1, max_size=4)), min_size=1, max_size=6
)


def _wire(replies: list[tuple[int, list[str]]]) -> bytes:
    out = []
    for code, lines in replies:
        for i, line in enumerate(lines):
            out.append(f"{code}{'-' if i < len(lines) - 1 else ' '}{line}\r\n")
    return "".join(out).encode()


def _read(data: bytes, cuts: list[int], count: int) -> list[Reply]:
    async def run() -> list[Reply]:
        reader = asyncio.StreamReader()
        client = FastSmtpClient("127.0.0.1", 25)
        client.reader = reader
        pieces, start = [], 0
        for cut in sorted(c % (len(data) + 1) for c in cuts):
            pieces.append(data[start:cut])
            start = cut
        pieces.append(data[start:])

        async def feed() -> None:
            for piece in pieces:
                if piece:
                    reader.feed_data(piece)
                await asyncio.sleep(0)

        feeding = asyncio.create_task(feed())
        replies = await client.read_replies(count)
        await feeding
        return replies

    return asyncio.run(run())


@settings(max_examples=200, deadline=None)
@given(replies=_REPLIES, cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_replies_come_back_whole_however_the_bytes_are_cut(
    replies: list[tuple[int, list[str]]], cuts: list[int]
) -> None:
    found = _read(_wire(replies), cuts, len(replies))
    assert found == [Reply(code, "\n".join(lines)) for code, lines in replies]


@pytest.mark.parametrize("line", [b"25\r\n", b"abc hello\r\n", b"2x0 hi\r\n"])
def test_a_malformed_reply_line_is_refused(line: bytes) -> None:
    with pytest.raises(SmtpProtocolError):
        _read(b"250 ok\r\n" + line, [], 2)
