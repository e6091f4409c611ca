"""Import throughput against PostgreSQL's COPY of the same file, in one run.

    .venv/bin/python bench/import.py                  # 1,000,000 rows
    .venv/bin/python bench/import.py -n 20000         # smoke size
    .venv/bin/python bench/import.py --sizes 100000,1000000   # memory flat in N?

Generates a lead file of N rows (email, first/last name, phone for a third of the rows,
company, country, email consent with a date, topics; 1 % duplicates and 0.5 % bad rows),
then in the same run:

- reference: ``COPY`` of the file into a bare table of text columns (psycopg, the file
  streamed from disk), best of ``--reference-runs``;
- Listwarden: a fresh PostgreSQL database, the file stored as an import and run to the end
  by the import job's own code (``app.imports.service.run``, what the ``run_import`` actor
  calls) in a separate worker process, which splits the rows among ``--processes``
  processes (by a hash of the email) that each validate and write their share.

Prints rows per second for both, their ratio, the CPU time per row of the import's
processes and of its PostgreSQL backends (less sensitive than the rate to whatever else the
machine is doing), and the worker's peak resident memory (its own, and the largest of its
helper processes: the fork server and the partitions forked from it), and a yardstick of
the machine's speed: what email-validator takes per address here."""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
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

from measure import BackendCpu, children, cpu_seconds, descendants, peak_rss_mb  # noqa: E402

FIRST = ["Anna", "Ben", "Carla", "David", "Emma", "Felix", "Greta", "Hugo", "Ida", "Jonas", "Klara", "Lukas"]
LAST = ["Müller", "Schmidt", "Smith", "García", "Rossi", "Dubois", "Kowalski", "Jensen", "O'Brien", "Nguyen"]
DOMAINS = ["example.com", "example.org", "mail.example.net", "corp.example.de", "example.co.uk"]
COMPANIES = ["Acme GmbH", "Globex Ltd", "Initech", "Umbrella plc", "Hooli", ""]
TOPICS = ["member-updates", "special-offers", "surveys"]
HEADER = [
    "Email Address",
    "First Name",
    "Last Name",
    "Phone",
    "Company",
    "Country",
    "email_consent",
    "email_consent_date",
    "topics",
]


def generate(path: Path, rows: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    import csv

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i in range(rows):
            roll = rng.random()
            n = rng.randrange(max(1, i)) if roll < 0.01 and i else i  # 1 % repeat an earlier person
            first, last = FIRST[n % len(FIRST)], LAST[(n // 7) % len(LAST)]
            email = f"{first.lower()}.{n}@{DOMAINS[n % len(DOMAINS)]}"
            if 0.01 <= roll < 0.015:
                email = f"{first.lower()}.{n}@@broken"  # 0.5 % bad rows
            phone = f"+49 30 {1000000 + n % 8999999}" if n % 3 == 0 else ""
            writer.writerow(
                [
                    email,
                    first,
                    last,
                    phone,
                    COMPANIES[n % len(COMPANIES)],
                    "DE",
                    "yes" if n % 5 else "",
                    f"2025-{1 + n % 12:02d}-{1 + n % 28:02d}",
                    TOPICS[n % 3] if n % 2 else "",
                ]
            )


def reference_copy(path: Path, dsn: str) -> float:
    import psycopg

    cols = ", ".join(f"c{i} text" for i in range(len(HEADER)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TEMP TABLE bare ({cols})")
        start = time.perf_counter()
        with (
            conn.cursor() as cur,
            path.open("rb") as handle,
            cur.copy("COPY bare FROM STDIN WITH (FORMAT csv, HEADER true)") as copy,
        ):
            while chunk := handle.read(1 << 20):
                copy.write(chunk)
        return time.perf_counter() - start


def validator_cost(addresses: int = 5_000, runs: int = 5) -> float:
    """Microseconds email-validator takes per address here (median of ``runs``): a
    yardstick of the machine's speed, so that rates from different machines compare. The
    import issue's 25,000 rows/s bar was set where this cost 31-35 us."""
    from email_validator import validate_email

    batch = [f"anna.{i}@example.com" for i in range(addresses)]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for address in batch:
            validate_email(address, check_deliverability=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6 / addresses


def child(import_id: int, processes: int) -> None:
    """The worker process: runs the import job to the end and reports its figures."""
    import threading

    from app.imports import service

    # Partition processes are forked from a fork server (a child of this process): their
    # CPU is in the server's (it reaps them), read at the end; their peak memory is sampled.
    peaks: dict[int, float] = {}
    running = True

    def sample_memory() -> None:
        while running:
            for pid in descendants(os.getpid()):
                try:
                    peaks[pid] = max(peaks.get(pid, 0.0), peak_rss_mb(pid))
                except (FileNotFoundError, ProcessLookupError):
                    continue
            time.sleep(0.2)

    sampler = threading.Thread(target=sample_memory, daemon=True)
    before = resource.getrusage(resource.RUSAGE_SELF)
    before_live = {pid: cpu_seconds(pid) for pid in children(os.getpid())}
    sampler.start()
    start = time.perf_counter()
    final = service.run(import_id, processes=processes)
    elapsed = time.perf_counter() - start
    running = False
    sampler.join()
    time.sleep(0.3)  # the fork server reaps the partitions it forked
    self_usage = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)  # processes of our own (spawn)
    live = sum(cpu_seconds(pid) - before_live.get(pid, 0.0) for pid in children(os.getpid()))
    own = self_usage.ru_maxrss / 1024
    helpers = max([reaped.ru_maxrss / 1024, *peaks.values()])
    cpu = sum(u.ru_utime + u.ru_stime for u in (self_usage, reaped)) + live
    cpu -= before.ru_utime + before.ru_stime
    print(
        json.dumps(
            {
                "elapsed": elapsed,
                "cpu": cpu,
                "rss_mb": own,
                "helper_rss_mb": helpers,
                "status": final.status,
                "rows_done": final.rows_done,
                "counts": final.counts,
            }
        )
    )


def run_listwarden(path: Path, base_url: str, processes: int) -> dict[str, object]:
    import sqlalchemy as sa

    name = f"lw_bench_import_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = base_url.rsplit("/", 1)[0] + f"/{name}"
    var = Path(tempfile.mkdtemp(prefix="lw-bench-import-"))
    env = {
        **os.environ,
        "LISTWARDEN_DATABASE_URL": url,
        "LISTWARDEN_VAR_DIR": str(var),
        "LISTWARDEN_BROKER_URL": "embedded",
        "LISTWARDEN_SECRET_KEY": "bench-" + uuid.uuid4().hex,
    }
    try:
        os.environ.update(env)
        from app.auth.actor import Actor
        from app.config import use_settings
        from app.db import session_scope
        from app.imports import service
        from app.main import prepare_database

        use_settings(None)
        from app.config import get_settings
        from app.migrate import upgrade

        upgrade(get_settings())
        prepare_database(get_settings())
        from app.auth.service import create_token

        with session_scope() as session, path.open("rb") as handle:
            # As through the API: the import's consent events name the token that started it.
            token, _ = create_token(session, "admin", name="bench")
            job = service.create(
                session,
                handle,
                path.name,
                service.ImportOptions(consent_text="Bench consent"),
                Actor(kind="staff", role="admin", token_id=token.id),
                enqueue=False,
            )
            import_id = job.id
        backends = BackendCpu(admin, name)
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            worker = subprocess.Popen(
                [sys.executable, __file__, "--child", str(import_id), "--processes", str(processes)],
                env=env,
                stdout=out,
                stderr=err,
                text=True,
            )
            while worker.poll() is None:  # the partitions' backends, while they live
                time.sleep(0.5)
                backends.sample()
            out.seek(0)
            err.seek(0)
            if worker.returncode != 0:
                sys.exit(f"the import worker failed:\n{err.read()[-4000:]}")
            result: dict[str, object] = json.loads(out.read().strip().splitlines()[-1])
        result["pg_cpu"] = backends.total()
        return result
    finally:
        from app.db import dispose_engines

        dispose_engines()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--rows", type=int, default=1_000_000)
    parser.add_argument("--sizes", help="comma-separated row counts, run one after another (memory in N)")
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help="processes that validate and write (partitions; default: the import_processes setting)",
    )
    parser.add_argument("--reference-runs", type=int, default=3)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.processes is None:  # the product's own default
        from app.config import Settings

        args.processes = Settings.model_fields["import_processes"].get_default(call_default_factory=True)
    if args.child:
        child(args.child, args.processes)
        return
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [args.rows]
    dsn = args.pg.replace("postgresql+psycopg://", "postgresql://")
    for rows in sizes:
        with tempfile.TemporaryDirectory(prefix="lw-bench-file-") as tmp:
            path = Path(tmp) / "leads.csv"
            generate(path, rows)
            size_mb = path.stat().st_size / 1e6
            ref = [reference_copy(path, dsn) for _ in range(args.reference_runs)]
            ours = run_listwarden(path, args.pg, args.processes)
        ref_rate = rows / statistics.median(ref)
        rate = rows / float(ours["elapsed"])  # type: ignore[arg-type]
        print(f"rows                     {rows:,} ({size_mb:.1f} MB)")
        print(f"PostgreSQL COPY          {ref_rate:,.0f} rows/s  (median of {len(ref)})")
        helpers = f"{args.processes} partition{'s' if args.processes != 1 else ''}"
        print(f"Listwarden import        {rate:,.0f} rows/s  ({ours['elapsed']:.1f} s, {helpers})")
        print(f"ratio                    {rate / ref_rate:.3f}")
        py_us, pg_us = (float(ours[k]) * 1e6 / rows for k in ("cpu", "pg_cpu"))  # type: ignore[arg-type]
        split = f"import processes {py_us:.0f}, PostgreSQL {pg_us:.0f}"
        print(f"CPU per row              {py_us + pg_us:.0f} us ({split})")
        memory = f"{ours['rss_mb']:.0f} MB (largest helper process {ours['helper_rss_mb']:.0f} MB)"
        print(f"worker peak memory       {memory}")
        print(f"machine yardstick        email-validator {validator_cost():.1f} us per address")
        print(f"counts                   {json.dumps(ours['counts'])}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
