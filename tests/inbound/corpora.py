"""The labelled public corpora (``../shared/corpora``) and how their labels are read.

Label columns differ per corpus; they are normalised here, once, by rules over the
columns — never by sample name:

- kind: ``bounce`` -> bounce, ``complaint`` -> complaint, ``autoreply`` /
  ``challenge-response`` / ``delivery-report`` / ``delay-warning`` -> autoreply (the
  labeller's reading: automatic, not a failure), ``human`` -> other. Our kinds: bounce
  (failed or delayed) -> bounce, complaint -> complaint, autoreply -> autoreply, optout /
  reply / unparseable -> other. A label ``complaint`` whose feedback type is ``opt-out``
  (an unsubscribe request sent by a mail client) also accepts our ``optout``.
- recipient: the labelled addresses (``|``-joined) must all be among the ones we name;
  checked where the recipient label's confidence is high (``recipient_confidence`` when
  the corpus has it, else ``label_confidence``).
- hard/soft: ``hard`` / ``hard (…)`` -> hard, ``soft`` -> soft, compared with our
  ``bounce_type`` (hard: the address cannot receive mail; soft: this message failed; our
  ``delayed`` counts as soft). flufl.bounce does not label hard/soft: its column is its
  detectors' ``is_temporary`` flag (``permanent`` / ``temporary(soft)``), i.e. whether the
  failure is final or the server is still retrying (all ten ``temporary`` samples are
  delay warnings; its ``permanent`` ones include full mailboxes and expired queues, which
  sisimai and BounceParser label soft). That column is compared with what it labels:
  final (our hard or soft) vs still retrying (our ``delayed``). Other values (n/a,
  undetermined, empty) are not compared.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def corpora_root() -> Path:
    override = os.environ.get("LISTWARDEN_CORPORA")
    if override:
        return Path(override)
    return (REPO_ROOT / ".." / "shared" / "corpora").resolve()


@dataclass(frozen=True)
class Sample:
    corpus: str
    path: Path
    kind: str  # bounce | complaint | autoreply | other
    accepts_optout: bool
    recipients: tuple[str, ...]
    recipient_checked: bool
    bounce_type: str | None  # hard | soft | permanent | temporary | None


def _kind(label: str) -> str:
    label = label.strip().lower()
    if label in ("bounce", "complaint"):
        return label
    if label in ("autoreply", "challenge-response", "delivery-report", "delay-warning"):
        return "autoreply"
    return "other"


def _bounce_type(value: str) -> str | None:
    value = (value or "").split("|")[0].strip().lower()
    if value.startswith("hard"):
        return "hard"
    if value.startswith("soft"):
        return "soft"
    if value.startswith("permanent"):
        return "permanent"
    if value.startswith("temporary"):
        return "temporary"
    return None


def bounce_type_agrees(label: str, ours: str | None) -> bool:
    if label in ("permanent", "temporary"):
        final = ours in ("hard", "soft")
        return final if label == "permanent" else ours == "delayed"
    return {"hard": "hard", "soft": "soft", "delayed": "soft"}.get(ours or "") == label


def load_corpora(root: Path | None = None) -> dict[str, list[Sample]]:
    root = root or corpora_root()
    out: dict[str, list[Sample]] = {}
    for labels in sorted(root.glob("*/labels.csv")):
        corpus = labels.parent.name
        rows: list[Sample] = []
        with labels.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                confidence = (row.get("recipient_confidence") or row.get("label_confidence") or "").strip()
                recipients = tuple(
                    a.strip().lower() for a in (row.get("recipient") or "").split("|") if a.strip()
                )
                rows.append(
                    Sample(
                        corpus=corpus,
                        path=labels.parent / row["filename"],
                        kind=_kind(row["kind"]),
                        accepts_optout=(row.get("feedback_type") or "").split("|")[0] == "opt-out",
                        recipients=recipients,
                        recipient_checked=bool(recipients) and confidence == "high",
                        bounce_type=_bounce_type(
                            row.get("bounce_type") or row.get("bounce_type_mapped") or ""
                        ),
                    )
                )
        out[corpus] = rows
    return out


def our_class(kind: str) -> str:
    if kind in ("bounce", "complaint", "autoreply"):
        return kind
    return "other"
