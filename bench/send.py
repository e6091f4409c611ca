"""Campaign sending throughput against Postfix's smtp-source, in one run.

    .venv/bin/python bench/send.py                 # 100,000 contacts
    .venv/bin/python bench/send.py -n 2000         # smoke size
    .venv/bin/python bench/send.py --suppressions 1000000

A campaign to N contacts on PostgreSQL with the Redis broker and two ``listwarden worker``
processes, delivering into Postfix's ``smtp-sink``; in the same run, ``smtp-source -d``
(persistent connections) sends the same number of messages of the same size over the same
number of connections into the same sink. Prints messages per second for both (median of
the reference runs), their ratio, and the peak resident memory of each worker. DKIM
signing is on (``--dkim rsa|ed25519|none``).

Needs: PostgreSQL (``--pg``), Redis (``--redis``), and ``smtp-sink``/``smtp-source``
(Debian package ``postfix``)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from measure import BackendCpu, cpu_seconds, peak_rss_mb  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def need(tool: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if not path:
        sys.exit(f"{tool} not found: install Debian's postfix package (apt-get install postfix)")
    return path


def wait_port(port: int, timeout: float = 10) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def _redis_cpu(client: object) -> float:
    info = client.info("cpu")  # type: ignore[attr-defined]
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--contacts", type=int, default=100_000)
    parser.add_argument("--suppressions", type=int, default=0, help="extra rows in the suppression table")
    parser.add_argument("--connections", type=int, default=16, help="SMTP connections in all (both sides)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="actor threads per worker")
    parser.add_argument("--dkim", choices=["rsa", "ed25519", "none"], default="rsa")
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--reference-runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--thread-cpu", action="store_true", help="print each worker thread's CPU time")
    parser.add_argument(
        "--py-spy",
        metavar="DIR",
        help="profile each worker with py-spy into DIR (CPU figures then include it)",
    )
    args = parser.parse_args()

    sink, source = need("smtp-sink"), need("smtp-source")
    import redis
    import sqlalchemy as sa

    admin = sa.create_engine(args.pg, isolation_level="AUTOCOMMIT")
    dbname = f"lw_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{dbname}"'))
    db_url = admin.url.set(database=dbname).render_as_string(hide_password=False)
    namespace = f"lwbench-{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="lwbench-"))
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        os.environ.update(
            {
                "LISTWARDEN_DATABASE_URL": db_url,
                "LISTWARDEN_SECRET_KEY": "bench-secret-key",
                "LISTWARDEN_VAR_DIR": str(tmp),
                "LISTWARDEN_BROKER_URL": args.redis,
                "LISTWARDEN_BROKER_NAMESPACE": namespace,
                "LISTWARDEN_PUBLIC_URL": "https://lists.example.com",
                "LISTWARDEN_FROM_EMAIL": "news@example.com",
            }
        )
        per_worker = max(1, args.connections // args.workers)
        os.environ["LISTWARDEN_SMTP_URL"] = f"smtp://127.0.0.1:{port}?starttls=0&connections={per_worker}"
        if args.dkim != "none":
            os.environ.update(_dkim_key(tmp, args.dkim))

        from app.config import get_settings
        from app.migrate import upgrade

        settings = get_settings()
        upgrade(settings)
        print(
            f"database {dbname}: loading {args.contacts:,} contacts and {args.suppressions:,} suppressions…",
            flush=True,
        )
        _load(settings, args.contacts, args.suppressions)
        size = _message_size(settings)

        sink_proc = subprocess.Popen(
            [sink, "-u", "nobody", f"127.0.0.1:{port}", "1000"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(sink_proc)
        wait_port(port)

        def reference() -> float:
            start = time.perf_counter()
            subprocess.run(
                [
                    source,
                    "-d",
                    "-s",
                    str(args.connections),
                    "-m",
                    str(args.contacts),
                    "-l",
                    str(size),
                    "-f",
                    "news@example.com",
                    "-t",
                    "someone@example.com",
                    f"127.0.0.1:{port}",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            return args.contacts / (time.perf_counter() - start)

        ref_rates = [reference() for _ in range(max(1, args.reference_runs // 2 + args.reference_runs % 2))]

        env = dict(os.environ)
        command = [sys.executable, "-m", "app.cli", "worker", "--threads", str(args.threads)]

        def profiled(i: int) -> list[str]:
            if not args.py_spy:
                return command
            Path(args.py_spy).mkdir(parents=True, exist_ok=True)
            out = str(Path(args.py_spy) / f"worker-{i}.txt")
            return [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "-f",
                "raw",
                "-r",
                "200",
                "-o",
                out,
                "--",
                *command,
            ]

        workers = [
            subprocess.Popen(
                profiled(i),
                cwd=str(ROOT),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            for i in range(args.workers)
        ]
        procs.extend(workers)
        time.sleep(2.0)  # workers import, connect to Redis and start their scheduler

        from app.auth.actor import Actor
        from app.campaigns import service as campaigns
        from app.campaigns.schemas import CampaignIn
        from app.db import session_scope
        from app.delivery import repository

        with session_scope() as session:
            campaign = campaigns.create(session, CampaignIn(**_CAMPAIGN), Actor.system())
            campaign_id = campaign.id
        assert campaign_id is not None
        cpu_before = [cpu_seconds(w.pid) for w in workers]
        backends = BackendCpu(admin, dbname)
        redis_client = redis.Redis.from_url(args.redis)
        redis_before = _redis_cpu(redis_client)
        start = time.perf_counter()
        with session_scope() as session:
            campaigns.send(session, campaigns.get(session, campaign_id), Actor.system())
        while True:
            time.sleep(0.2)
            backends.sample()
            with session_scope() as session:
                status = campaigns.get(session, campaign_id).status
                if status == "sent":
                    counts = repository.counts(session, campaign_id)
                    break
        elapsed = time.perf_counter() - start
        ours = counts.get("sent", 0) / elapsed
        memory = [peak_rss_mb(w.pid) for w in workers]
        if args.thread_cpu:
            for w in workers:
                tasks = sorted(Path(f"/proc/{w.pid}/task").iterdir(), key=lambda t: int(t.name))
                spent = ", ".join(f"{t.name}:{cpu_seconds(0, f'{t}/stat'):.2f}" for t in tasks)
                print(f"worker {w.pid} threads (tid:CPU s)  {spent}")
        cpu = sum(cpu_seconds(w.pid) - before for w, before in zip(workers, cpu_before, strict=True))
        backends.sample()
        db_cpu = backends.total()
        redis_cpu = _redis_cpu(redis_client) - redis_before
        ref_rates += [reference() for _ in range(args.reference_runs // 2)]
        ref = statistics.median(ref_rates)

        print(f"contacts              {args.contacts:,}  (suppression rows: {args.suppressions:,})")
        print(f"message size          {size:,} bytes, DKIM {args.dkim}, {args.connections} SMTP connections")
        print(f"deliveries            {counts}")
        runs = ", ".join(f"{r:,.0f}" for r in ref_rates)
        print(f"smtp-source -d        {ref:,.0f} msg/s (median of {len(ref_rates)}: {runs})")
        shape = f"{args.workers} workers x {args.threads} threads, {elapsed:.1f} s"
        print(f"listwarden            {ours:,.0f} msg/s ({shape})")
        print(f"ratio                 {ours / ref:.3f}")
        sent = max(1, counts.get("sent", 0))
        print(f"worker CPU per msg    {cpu / sent * 1e6:,.0f} µs ({cpu:.1f} CPU s in all workers)")
        print(f"PostgreSQL per msg    {db_cpu / sent * 1e6:,.0f} µs ({db_cpu:.1f} CPU s in its backends)")
        print(f"Redis per msg         {redis_cpu / sent * 1e6:,.0f} µs ({redis_cpu:.1f} CPU s, whole server)")
        total = cpu + db_cpu + redis_cpu
        print(f"total CPU per msg     {total / sent * 1e6:,.0f} µs")
        print(f"peak worker memory    {', '.join(f'{m:.0f} MB' for m in memory)}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                try:
                    # py-spy writes its profile on SIGINT (the worker stops on either)
                    os.killpg(proc.pid, signal.SIGINT if args.py_spy else signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        from app.db import dispose_engines

        dispose_engines()
        client = redis.Redis.from_url(args.redis)
        for key in client.scan_iter(f"{namespace}*"):
            client.delete(key)
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
        shutil.rmtree(tmp, ignore_errors=True)


_CAMPAIGN = {
    "name": "Benchmark",
    "topic": "special-offers",
    "purpose": "marketing",
    "subject": "Hello {{ first_name }}, this week's offers",
    "html": (
        "<h1>Hello {{ name }}</h1>"
        + "<p>Our offers for {{ company or 'you' }} this week: fresh, seasonal and well priced. "
        "Visit <a href='https://shop.example.com/offers?c={{ zip }}'>the shop</a>.</p>" * 14
    ),
}


def _dkim_key(tmp: Path, kind: str) -> dict[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ed25519.Ed25519PrivateKey.generate()
    )
    path = tmp / f"dkim-{kind}.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return {"LISTWARDEN_DKIM_KEY_PATH": str(path), "LISTWARDEN_DKIM_DOMAIN": "example.com"}


def _load(settings: object, n: int, suppressions: int) -> None:
    """Contacts with email opt-ins, written with COPY (the benchmark is about sending)."""
    import hashlib
    import io

    import psycopg

    from app.suppression.hashing import keyed_hash

    url = os.environ["LISTWARDEN_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        buf = io.StringIO()
        for i in range(1, n + 1):
            email = f"person{i}@example.com"
            buf.write(
                f"{i}\t{email}\t{keyed_hash('email', email)}\t{keyed_hash('domain', 'example.com')}\t"
                f"Person {i}\timport\t{{}}\t{{}}\tt\t2026-01-01 00:00:00+00\t2026-01-01 00:00:00+00\n"
            )
        buf.seek(0)
        with cur.copy(
            "COPY contact (id, email, email_hash, domain_hash, name, source, attributes, source_detail, "
            "age_confirmed, created_at, updated_at) FROM STDIN"
        ) as copy:
            copy.write(buf.getvalue())
        cur.execute("SELECT setval('contact_id_seq', %s)", (n,))
        buf = io.StringIO()
        for i in range(1, n + 1):
            buf.write(f"{i}\temail\t\\N\topted_in\t2026-01-01 00:00:00+00\n")
        buf.seek(0)
        with cur.copy("COPY preference (contact_id, channel, topic, status, updated_at) FROM STDIN") as copy:
            copy.write(buf.getvalue())
        if suppressions:
            buf = io.StringIO()
            for i in range(suppressions):
                digest = hashlib.sha256(f"other{i}".encode()).hexdigest()
                buf.write(f"email\temail\t{digest}\tunsubscribe\trecipient\t2026-01-01 00:00:00+00\n")
            buf.seek(0)
            with cur.copy(
                "COPY suppression (channel, kind, address_hash, reason, origin, created_at) FROM STDIN"
            ) as copy:
                copy.write(buf.getvalue())
        conn.commit()
        cur.execute("ANALYZE")


def _message_size(settings: object) -> int:
    from app.campaigns.schemas import CampaignIn
    from app.db import session_scope
    from app.delivery.service import build_envelope, send_context
    from app.models import Campaign

    data = CampaignIn(**_CAMPAIGN)
    campaign = Campaign(id=0, **data.model_dump(exclude={"audience"}), audience={})
    with session_scope() as session:
        ctx = send_context(session, campaign)
    envelope, _ = build_envelope(
        ctx, 1, 1, {"email": "person1@example.com", "name": "Person 1", "attributes": {}}
    )
    return len(envelope.data)


if __name__ == "__main__":
    main()
