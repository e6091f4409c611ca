"""Transport details: SMTP reply classification and dot-stuffing."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from app.delivery.transport import RelayConfig, _dot_stuff, classify_reply


def _reference_dot_stuff(data: bytes) -> bytes:
    data = re.sub(rb"\r(?!\n)", b"\r\n", re.sub(rb"(?<!\r)\n", b"\r\n", data))
    data = re.sub(rb"(?m)^\.", b"..", data)
    return (data if data.endswith(b"\r\n") else data + b"\r\n") + b".\r\n"


@given(st.lists(st.sampled_from([b"a", b".", b"\r\n", b"\n", b"\r", b" ", b"..", b"\r\n."]), max_size=40))
def test_dot_stuffing_matches_the_rfc_reading(parts: list[bytes]) -> None:
    data = b"".join(parts)
    assert _dot_stuff(data) == _reference_dot_stuff(data)


def test_reply_classification() -> None:
    assert classify_reply(250, "ok").status == "sent"
    assert classify_reply(451, "try later").status == "deferred"
    assert (
        classify_reply(550, "5.1.1 <x@example.com>: Recipient address rejected: User unknown").status
        == "bounced"
    )
    assert classify_reply(550, "5.7.1 rejected by policy").status == "failed"
    assert classify_reply(554, "5.7.1 spam").status == "failed"


def test_relay_url() -> None:
    cfg = RelayConfig.from_url("smtps://user%40x:p%3Ass@mail.example.com?connections=3&timeout=5&verify=0")
    assert (cfg.host, cfg.port, cfg.use_tls, cfg.username, cfg.password) == (
        "mail.example.com",
        465,
        True,
        "user@x",
        "p:ss",
    )
    assert cfg.connections == 3 and cfg.timeout == 5 and cfg.validate_certs is False
    assert RelayConfig.from_url("smtp://relay:2525?starttls=1").start_tls is True
