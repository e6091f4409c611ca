"""RFC 8058 one-click unsubscribes under concurrent load while a campaign is sending,
against a trivial endpoint of the same app (``GET /healthz``) measured in the same run.

    .venv/bin/python bench/unsubscribe.py                       # SQLite file, ~30 s
    .venv/bin/python bench/unsubscribe.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/unsubscribe.py --contacts 20000 --seconds 15 --connections 32

The app runs as ``uvicorn app.main:create_app --factory`` on 127.0.0.1 in the embedded
default (Dramatiq in-process, mail into the outbox), in a process of its own. A first
campaign's deliveries are written to the ledger so that every contact holds a real
unsubscribe link; a second campaign to the same people is then sending (rate-limited so
that it lasts the whole run) while an asyncio client with keep-alive connections (raw
HTTP/1.1, so the client costs little) first loads ``/healthz``, then POSTs
``List-Unsubscribe=One-Click`` to a different person's link each time. Prints requests per
second and latency percentiles of each, their ratio, and checks DESIGN invariant 2: no
message of the sending campaign went to anyone after their opt-out was acknowledged.

With a PostgreSQL URL, the bench creates a database of its own on that server and drops it
at the end. Goal: one-click p99 under 50 ms and at least a third of the trivial rate."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ONE_CLICK_BODY = b"List-Unsubscribe=One-Click"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- database
def make_database(url: str | None, tmp: Path) -> tuple[str, str | None]:
    """(URL to use, PostgreSQL database to drop afterwards)."""
    if not url:
        return f"sqlite:///{tmp / 'bench.db'}", None
    if url.startswith("sqlite"):
        return url, None
    import sqlalchemy as sa

    name = f"lw_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return sa.make_url(url).set(database=name).render_as_string(hide_password=False), name


def drop_database(admin_url: str, name: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def seed(contacts: int) -> tuple[list[tuple[int, str]], str]:
    """Contacts opted in to email and ``special-offers``, a first campaign that reached them
    all (their links), and an admin API token. Returns ([(contact id, one-click path)], token)."""
    from sqlalchemy import insert, select

    from app.auth.service import create_token
    from app.db import session_scope
    from app.models import Campaign, Contact, Delivery, Preference, utcnow
    from app.recipients.tokens import TokenKind, make_url_token
    from app.suppression.hashing import IdentifierKind, keyed_hash

    now = utcnow()
    with session_scope() as session:
        rows = [
            {
                "email": f"reader{i}@bench.example",
                "email_hash": keyed_hash(IdentifierKind.EMAIL, f"reader{i}@bench.example"),
                "domain_hash": keyed_hash(IdentifierKind.DOMAIN, "bench.example"),
                "name": f"Reader {i}",
                "source": "import",
                "attributes": {},
                "source_detail": {},
                "age_confirmed": True,
                "created_at": now,
                "updated_at": now,
            }
            for i in range(contacts)
        ]
        session.execute(insert(Contact), rows)
        ids = [int(i) for i in session.execute(select(Contact.id).order_by(Contact.id)).scalars()]  # type: ignore[arg-type]
        session.execute(
            insert(Preference),
            [
                {
                    "contact_id": cid,
                    "channel": "email",
                    "topic": topic,
                    "status": "opted_in",
                    "updated_at": now,
                }
                for cid in ids
                for topic in (None, "special-offers")
            ],
        )
        first = Campaign(
            name="Last week's offers",
            topic="special-offers",
            subject="Offers",
            html="<p>Offers</p>",
            status="sent",
            audience_built_at=now,
            started_at=now,
            finished_at=now,
        )
        session.add(first)
        session.flush()
        session.execute(
            insert(Delivery),
            [
                {
                    "campaign_id": first.id,
                    "contact_id": cid,
                    "status": "sent",
                    "attempts": 1,
                    "sent_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for cid in ids
            ],
        )
        deliveries = dict(
            session.execute(
                select(Delivery.contact_id, Delivery.id).where(Delivery.campaign_id == first.id)
            ).all()  # type: ignore[arg-type]
        )
        _row, token = create_token(session, "admin", name="bench")
    links = [(cid, f"/u/{make_url_token(TokenKind.UNSUBSCRIBE, cid, deliveries[cid])}") for cid in ids]
    return links, token


# --------------------------------------------------------------------------- HTTP client
class HttpError(Exception):
    pass


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        elif name.strip().lower() == "transfer-encoding":
            raise HttpError("chunked responses are not expected here")
    body = await reader.readexactly(length) if length else b""
    return status, body


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    #: Seconds spent loading this endpoint (over all its slices).
    elapsed: float = 0.0
    #: contact id -> wall-clock times the request was sent and the opt-out acknowledged.
    acknowledged: dict[int, tuple[float, float]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.count / max(1e-9, self.elapsed)

    #: contact id -> latency of its one-click (seconds).
    latency_by_contact: dict[int, float] = field(default_factory=dict)

    def percentile(self, p: float) -> float:
        return percentile(self.latencies, p)


def percentile(values: list[float], p: float) -> float:
    """In milliseconds."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000


async def load(
    port: int,
    phase: Phase,
    connections: int,
    seconds: float,
    requests: Iterator[tuple[int | None, bytes]],
) -> None:
    stop_at = time.perf_counter() + seconds

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop_at:
                try:
                    contact_id, request = next(requests)
                except StopIteration:
                    return
                t0, sent_at = time.perf_counter(), time.time()
                writer.write(request)
                status, _body = await read_response(reader)
                phase.latencies.append(time.perf_counter() - t0)
                if contact_id is not None:
                    phase.latency_by_contact[contact_id] = phase.latencies[-1]
                phase.statuses[status] = phase.statuses.get(status, 0) + 1
                if status != 200:
                    phase.errors += 1
                elif contact_id is not None:
                    phase.acknowledged[contact_id] = (sent_at, time.time())
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    phase.elapsed += time.perf_counter() - started


def healthz_requests(port: int) -> Iterator[tuple[int | None, bytes]]:
    request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    while True:
        yield None, request


def one_click_requests(port: int, links: list[tuple[int, str]]) -> Iterator[tuple[int | None, bytes]]:
    for cid, path in links:
        yield (
            cid,
            (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {len(ONE_CLICK_BODY)}\r\n\r\n"
            ).encode()
            + ONE_CLICK_BODY,
        )


# --------------------------------------------------------------------------- the run
def api(port: int, method: str, path: str, token: str, json: object | None = None) -> dict[str, object]:
    import httpx

    r = httpx.request(
        method, f"http://127.0.0.1:{port}{path}", json=json, headers={"Authorization": f"Bearer {token}"}
    )
    r.raise_for_status()
    return dict(r.json())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="", help="PostgreSQL server URL (default: a SQLite file)")
    parser.add_argument(
        "--contacts", type=int, default=20000, help="people (each one-click is another person)"
    )
    parser.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections")
    parser.add_argument(
        "--seconds", type=float, default=6.0, help="seconds of load for each endpoint (in 1 s slices)"
    )
    parser.add_argument(
        "--send-batch-size",
        type=int,
        default=0,
        help="LISTWARDEN_SEND_BATCH_SIZE and LISTWARDEN_EMBEDDED_SEND_BATCH_SIZE of the server "
        "(default: its own)",
    )
    parser.add_argument("--idle", action="store_true", help="no campaign sending during the run (diagnosis)")
    parser.add_argument(
        "--rate", type=float, default=0, help="campaign rate limit, messages/s (default: as fast as it goes)"
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="lw-bench-unsub-"))
    url, pg_name = make_database(args.database_url, tmp)
    port = free_port()
    env = {
        **os.environ,
        "LISTWARDEN_DATABASE_URL": url,
        "LISTWARDEN_VAR_DIR": str(tmp / "var"),
        "LISTWARDEN_SECRET_KEY": secrets.token_urlsafe(32),
        "LISTWARDEN_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "LISTWARDEN_SMTP_URL": f"outbox:{tmp / 'outbox'}",
        "LISTWARDEN_BROKER_URL": "embedded",
        "LISTWARDEN_SCHEDULER_INTERVAL_SECONDS": "1",
    }
    if args.send_batch_size:
        env["LISTWARDEN_SEND_BATCH_SIZE"] = str(args.send_batch_size)
        env["LISTWARDEN_EMBEDDED_SEND_BATCH_SIZE"] = str(args.send_batch_size)
    for key in (
        "LISTWARDEN_DATABASE_URL",
        "LISTWARDEN_VAR_DIR",
        "LISTWARDEN_SECRET_KEY",
        "LISTWARDEN_PUBLIC_URL",
    ):
        os.environ[key] = env[key]
    from app.config import Settings, use_settings
    from app.migrate import upgrade

    settings = Settings()
    use_settings(settings)
    server: subprocess.Popen[bytes] | None = None
    try:
        upgrade(settings)
        from app.db import session_scope
        from app.topics.service import ensure_topics

        with session_scope() as session:
            ensure_topics(session, settings.topics)
        links, token = seed(args.contacts)
        if pg_name is not None:
            analyze(url)  # as autovacuum would have by then (bench/send.py does the same)
        random.Random(8058).shuffle(links)  # not in the order the campaign sends in
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app.main:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=ROOT,
            env=env,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.1)

        campaign_id = None if args.idle else start_campaign(port, token, args.rate)
        warm = Phase("warm-up")
        trivial = Phase("GET /healthz")
        one_click = Phase("POST one-click")
        asyncio.run(load(port, warm, args.connections, 1.0, healthz_requests(port)))
        # Alternate one-second slices, so that both endpoints meet the same background load.
        clicks = one_click_requests(port, links)
        sent = [sent_count(campaign_id), time.monotonic()]
        for _ in range(max(1, round(args.seconds))):
            asyncio.run(load(port, trivial, args.connections, 1.0, healthz_requests(port)))
            asyncio.run(load(port, one_click, args.connections, 1.0, clicks))
        sent = [sent_count(campaign_id) - sent[0], time.monotonic() - sent[1]]
        final: dict[str, object] = {}
        violations = sent_total = 0
        waited: set[int] = set()
        if campaign_id is not None:
            final = api(port, "GET", f"/api/v1/campaigns/{campaign_id}", token)
            violations, sent_total, waited = check_invariant(campaign_id, one_click.acknowledged)
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
        from app.db import dispose_engines

        dispose_engines()
        if pg_name is not None:
            drop_database(args.database_url, pg_name)
        shutil.rmtree(tmp, ignore_errors=True)

    backend = "postgresql" if pg_name else "sqlite"
    sending = "no campaign sending" if campaign_id is None else f"campaign {campaign_id} sending"
    if campaign_id is not None:
        sending += f" at most {args.rate:g} msg/s" if args.rate else " as fast as it goes"
    print(
        f"bench/unsubscribe.py: {backend}, {args.contacts} contacts, {args.connections} connections, "
        f"{args.seconds:g} s per phase; {sending}"
    )
    header = ("endpoint", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "errors")
    print(f"{header[0]:<16} " + " ".join(f"{h:>9}" for h in header[1:]))
    for phase in (trivial, one_click):
        print(
            f"{phase.name:<16} {phase.count:>9} {phase.rate:>9.1f} {phase.percentile(50):>9.2f} "
            f"{phase.percentile(99):>9.2f} {phase.percentile(100):>9.2f} {phase.errors:>9}"
        )
    ratio = one_click.rate / trivial.rate if trivial.rate else float("nan")
    print(
        f"ratio one-click / trivial: {ratio:.2f} of the rate, "
        f"{one_click.percentile(99) / trivial.percentile(99):.1f}x the p99"
    )
    print(
        f"goal: one-click p99 < 50 ms: {'yes' if one_click.percentile(99) < 50 else 'NO'}; "
        f"rate >= 1/3 of trivial: {'yes' if ratio >= 1 / 3 else 'NO'}"
    )
    if campaign_id is not None:
        print(
            f"campaign: {sent[0]:.0f} messages sent during the measurement ({sent[0] / sent[1]:.0f} msg/s); "
            f"at the end {final['status']} {final['counts']}"
        )
        if final.get("status") != "sending":
            print("note: the campaign ended during the measurement (not all of it was while sending)")
        print(
            f"messages sent after an acknowledged opt-out (DESIGN invariant 2): {violations} of {sent_total}"
        )
        others = [v for c, v in one_click.latency_by_contact.items() if c not in waited]
        mine = [v for c, v in one_click.latency_by_contact.items() if c in waited]
        print(
            f"one-clicks whose own message was on its way (the answer waits for it): {len(mine)}, "
            f"p50 {percentile(mine, 50):.1f} ms, p99 {percentile(mine, 99):.1f} ms; the other "
            f"{len(others)}: p50 {percentile(others, 50):.2f} ms, p99 {percentile(others, 99):.2f} ms"
        )
    if one_click.errors or trivial.errors:
        print(f"statuses: healthz {trivial.statuses}, one-click {one_click.statuses}")
    if violations:
        raise SystemExit("invariant 2 violated")


def analyze(url: str) -> None:
    """Planner statistics for the freshly seeded tables: without them PostgreSQL plans for
    empty tables (a one-click's lookup then read every preference row: 50 ms instead of 0.3)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text("ANALYZE"))
    engine.dispose()


def sent_count(campaign_id: int | None) -> int:
    if campaign_id is None:
        return 0
    from sqlalchemy import func, select

    from app.db import session_scope
    from app.models import Delivery

    with session_scope() as session:
        return int(
            session.execute(
                select(func.count()).where(Delivery.campaign_id == campaign_id, Delivery.status == "sent")
            ).scalar_one()
        )


def start_campaign(port: int, token: str, rate: float) -> int:
    """A campaign to everyone, sending when this returns."""
    body: dict[str, object] = {
        "name": "This week's offers",
        "topic": "special-offers",
        "purpose": "marketing",
        "subject": "Offers for {{ first_name }}",
        "html": "<p>Hello {{ name }}, here are this week's offers.</p>",
    }
    if rate:
        body["rate_limit"] = rate
    campaign_id = int(str(api(port, "POST", "/api/v1/campaigns", token, body)["id"]))
    api(port, "POST", f"/api/v1/campaigns/{campaign_id}/send", token)
    deadline = time.monotonic() + 30
    while True:
        counts = api(port, "GET", f"/api/v1/campaigns/{campaign_id}", token)["counts"]
        if isinstance(counts, dict) and counts.get("sent", 0):
            return campaign_id
        if time.monotonic() > deadline:
            raise SystemExit("the campaign did not start sending")
        time.sleep(0.05)


def check_invariant(
    campaign_id: int, acknowledged: dict[int, tuple[float, float]]
) -> tuple[int, int, set[int]]:
    """(messages of the sending campaign sent to people after their opt-out was
    acknowledged, messages sent, people whose message was on its way while they clicked:
    their answer waited for it, as DESIGN invariant 2 asks)."""
    from sqlalchemy import select

    from app.db import session_scope
    from app.models import Delivery

    with session_scope() as session:
        rows = session.execute(
            select(Delivery.contact_id, Delivery.sent_at).where(
                Delivery.campaign_id == campaign_id, Delivery.status == "sent"
            )
        ).all()
    late = 0
    waited: set[int] = set()
    for contact_id, sent_at in rows:
        times = acknowledged.get(int(contact_id))
        if times is None or sent_at is None:
            continue
        started, acked = (datetime.fromtimestamp(t, UTC) for t in times)
        if sent_at > acked:
            late += 1
        elif sent_at >= started - timedelta(seconds=3):
            waited.add(int(contact_id))
    return late, len(rows), waited


if __name__ == "__main__":
    main()
