"""Relay options against a real server: STARTTLS and AUTH (aiosmtpd with a self-signed
certificate), and the sending rate limits per campaign and per recipient domain."""

from __future__ import annotations

import datetime as dt
import ssl
import time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.config import Settings, use_settings
from app.delivery.transport import Envelope, RelayConfig, SmtpTransport
from tests.campaigns.helpers import CAMPAIGN, bulk_contacts
from tests.smtp_server import Handler, free_port


def _tls_context(tmp_path: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return context


def _authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == b"sender"
        and auth_data.password == b"s3cret"
    )
    return AuthResult(success=ok)


@pytest.mark.parametrize("pipelining", [True, False])
def test_starttls_and_auth(tmp_path: Path, pipelining: bool) -> None:
    handler = Handler()
    if not pipelining:  # the aiosmtplib path: a relay that does not offer PIPELINING

        async def plain_ehlo(server, session, envelope, hostname, responses):  # type: ignore[no-untyped-def]
            session.host_name = hostname
            return responses

        handler.handle_EHLO = plain_ehlo  # type: ignore[method-assign]
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        tls_context=_tls_context(tmp_path),
        require_starttls=True,
        authenticator=_authenticator,
        auth_require_tls=True,
    )
    controller.start()
    try:
        good = SmtpTransport(
            RelayConfig.from_url(f"smtp://sender:s3cret@127.0.0.1:{port}?starttls=1&verify=0&connections=2")
        )
        outcomes = good.send_batch(
            [Envelope(1, "b@example.com", "to@example.com", b"Subject: x\r\n\r\nhi\r\n")]
        )
        assert [o.status for o in outcomes] == ["sent"], outcomes
        assert good.relay.pipelining is pipelining
        assert handler.received[0].rcpt == "to@example.com"
        bad = SmtpTransport(
            RelayConfig.from_url(f"smtp://sender:wrong@127.0.0.1:{port}?starttls=1&verify=0&timeout=2")
        )
        (outcome,) = bad.send_batch(
            [Envelope(2, "b@example.com", "to@example.com", b"Subject: x\r\n\r\nhi\r\n")]
        )
        assert outcome.status == "deferred" and len(handler.received) == 1
        unverified = SmtpTransport(
            RelayConfig.from_url(f"smtp://sender:s3cret@127.0.0.1:{port}?starttls=1&timeout=5")
        )
        (outcome,) = unverified.send_batch(
            [Envelope(3, "b@example.com", "to@example.com", b"Subject: x\r\n\r\nhi\r\n")]
        )
        assert outcome.status == "deferred"  # a self-signed certificate is refused unless verify=0
    finally:
        controller.stop()


def _send_and_time(settings: Settings, client, headers, stub_worker, **campaign: object) -> float:  # type: ignore[no-untyped-def]
    cid = client.post("/api/v1/campaigns", json={**CAMPAIGN, **campaign}, headers=headers).json()["id"]
    start = time.monotonic()
    client.post(f"/api/v1/campaigns/{cid}/send", headers=headers)
    from app.campaigns.scheduler import tick

    for _ in range(100):
        stub_worker()
        if client.get(f"/api/v1/campaigns/{cid}", headers=headers).json()["status"] == "sent":
            break
        time.sleep(0.05)
        tick(settings, requeue_after=0)
    assert client.get(f"/api/v1/campaigns/{cid}", headers=headers).json()["counts"] == {"sent": 20}
    return time.monotonic() - start


def test_campaign_rate_limit(db: Settings, session, client, admin_headers, smtp_server, stub_worker) -> None:  # type: ignore[no-untyped-def]
    settings = db.model_copy(update={"smtp_url": smtp_server.url})
    use_settings(settings)
    bulk_contacts(session, [f"r{i}@example.com" for i in range(20)])
    elapsed = _send_and_time(settings, client, admin_headers, stub_worker, rate_limit=10)
    assert elapsed >= 0.9  # 20 messages at 10/s with a burst of 10


def test_domain_rate_limit(db: Settings, session, client, admin_headers, smtp_server, stub_worker) -> None:  # type: ignore[no-untyped-def]
    settings = db.model_copy(update={"smtp_url": smtp_server.url, "domain_rate_limit": 10.0})
    use_settings(settings)
    bulk_contacts(session, [f"d{i}@slow-domain.example.com" for i in range(20)])
    elapsed = _send_and_time(settings, client, admin_headers, stub_worker)
    assert elapsed >= 0.9
    assert all(len(v) == 1 for v in smtp_server.handler.by_rcpt().values())
