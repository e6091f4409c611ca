"""Inbound classification speed over the labelled corpora, in one process.

Prints messages classified per second (median of several runs) and, measured in the same
run on the same bytes, the rate of only parsing them with
``email.message_from_bytes(policy=email.policy.default)``, with the ratio.

    .venv/bin/python bench/inbound.py [--runs 7] [--corpora ../shared/corpora]
"""

from __future__ import annotations

import argparse
import email
import email.policy
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.inbound.classify import Hints, classify  # noqa: E402


def load(root: Path) -> list[bytes]:
    files = sorted(p for p in root.glob("*/eml/*") if p.is_file())
    if not files:
        raise SystemExit(f"no corpus messages under {root}")
    return [p.read_bytes() for p in files]


def rate(messages: list[bytes], work: Callable[[bytes], object], runs: int) -> float:
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        for raw in messages:
            work(raw)
        rates.append(len(messages) / (time.perf_counter() - started))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    default_root = os.environ.get("LISTWARDEN_CORPORA") or str(REPO / ".." / "shared" / "corpora")
    parser.add_argument("--corpora", type=Path, default=Path(default_root))
    args = parser.parse_args()
    messages = load(args.corpora.resolve())
    hints = Hints(footer_markers=("https://lists.example.test/u/",))
    for raw in messages[:20]:  # warm up (regex compilation, imports)
        classify(raw, hints=hints)

    def parse(raw: bytes) -> object:
        return email.message_from_bytes(raw, policy=email.policy.default)

    def run(raw: bytes) -> object:
        return classify(raw, hints=hints)

    reference = rate(messages, parse, args.runs)
    classified = rate(messages, run, args.runs)
    size = sum(len(m) for m in messages)
    print(f"corpus: {len(messages)} messages, {size / 1024:.0f} KiB, median of {args.runs} runs, 1 process")
    print(f"reference  email.message_from_bytes(policy=default): {reference:10.0f} messages/s")
    print(f"listwarden classify():                               {classified:10.0f} messages/s")
    print(f"ratio classify / parse-only: {classified / reference:.2f}")


if __name__ == "__main__":
    main()
