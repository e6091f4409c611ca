"""The import API: upload, the job on the broker, progress, counts and the rejects file."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from typer.testing import CliRunner

from app.cli import app as cli
from tests.imports.helpers import csv_bytes


def _upload(client, headers, content: bytes, **form: str):  # type: ignore[no-untyped-def]
    return client.post(
        "/api/v1/imports", files={"file": ("leads.csv", content, "text/csv")}, data=form, headers=headers
    )


def test_upload_runs_as_a_job_and_reports_counts_and_rejects(client, token_for, stub_worker) -> None:
    sales = token_for("sales")
    content = csv_bytes(
        [
            ["E-Mail", "Vorname", "Nachname", "email_consent", "Notiz"],
            ["max@example.com", "Max", "Muster", "ja", "ok"],
            ['=HYPERLINK("http://evil.example")', "-2+3", "@SUM(A1)", "ja", "+cmd"],
            ["max@example.com", "", "", "", "again"],
        ],
        delimiter=";",
        encoding="latin-1",
    )
    created = _upload(client, sales, content, source="event", mapping=json.dumps({"Notiz": "attribute:note"}))
    assert created.status_code == 202, created.text
    body = created.json()
    assert body["status"] == "stored" and body["mapping"]["columns"]["E-Mail"] == "email"
    stub_worker()
    done = client.get(f"/api/v1/imports/{body['id']}", headers=sales).json()
    assert done["status"] == "done" and done["progress"] == 1.0 and done["rows_total"] == 3
    assert (
        done["counts"]["created"] == 1
        and done["counts"]["rejected"] == 1
        and done["counts"]["duplicates"] == 1
    )

    listed = client.get(f"/api/v1/imports/{body['id']}/rejects", headers=sales).json()["items"]
    assert listed[0]["row"] == 3 and listed[0]["column"] == "email"
    download = client.get(done["rejects_csv"], headers=sales)
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(download.text)))
    assert rows[0] == ["row", "column", "reason", "E-Mail", "Vorname", "Nachname", "email_consent", "Notiz"]
    assert rows[1][:2] == ["3", "email"]
    assert rows[1][3:] == ['\'=HYPERLINK("http://evil.example")', "'-2+3", "'@SUM(A1)", "ja", "'+cmd"]

    contact = client.get("/api/v1/contacts?email=max@example.com", headers=sales).json()["items"][0]
    assert contact["name"] == "Max Muster" and contact["source"] == "event"
    assert contact["attributes"] == {"note": "ok"}
    assert contact["preferences"] == [
        {
            "channel": "email",
            "topic": None,
            "status": "opted_in",
            "updated_at": contact["preferences"][0]["updated_at"],
        }
    ]


def test_roles_and_bad_requests(client, token_for) -> None:
    content = csv_bytes([["email"], ["a@example.com"]])
    assert _upload(client, {}, content).status_code == 401
    assert _upload(client, token_for("compliance"), content).status_code == 403
    marketer = token_for("marketer")
    assert _upload(client, marketer, content).status_code == 202
    assert client.get("/api/v1/imports", headers=token_for("compliance")).status_code == 200

    bad = [
        (csv_bytes([["Vorname"], ["Max"]]), {}, "no column holds"),
        (b"", {}, "empty"),
        (content, {"mapping": "{nope"}, "not JSON"),
        (content, {"mapping": json.dumps({"email": "mail_address"})}, "unknown target"),
        (content, {"merge": "sideways"}, "merge"),
        (content, {"options": json.dumps({"topics": ["knitting"]})}, "unknown topic"),
        (content, {"options": json.dumps({"surprise": 1})}, "surprise"),
    ]
    for payload, form, words in bad:
        answer = _upload(client, marketer, payload, **form)
        assert answer.status_code == 422, (form, answer.text)
        assert words in answer.text, answer.text
    assert client.get("/api/v1/imports/999", headers=marketer).status_code == 404


def test_cli_imports_a_file_with_a_progress_bar(db, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "event.csv"
    path.write_bytes(csv_bytes([["Email", "Full Name", "Consent"], ["cli@example.com", "Cli User", "yes"],
                                ["broken", "B", "yes"]]))  # fmt: skip
    result = CliRunner().invoke(
        cli, ["import", str(path), "--source", "event", "--map", "Consent=email_consent"]
    )
    assert result.exit_code == 0, result.output
    assert "created 1" in result.output and "rejected 1" in result.output
    assert "rejects.csv" in result.output
    missing = CliRunner().invoke(cli, ["import", str(tmp_path / "nope.csv")])
    assert missing.exit_code != 0
