"""The imports page: upload with CSRF, progress, counts and the rejects download."""

from __future__ import annotations

from tests.imports.helpers import csv_bytes
from tests.web.conftest import csrf_from, login


def test_upload_from_the_web_page_and_follow_it(web, make_staff, stub_worker) -> None:
    login(web, make_staff("sales"))
    page = web.get("/imports")
    assert page.status_code == 200 and 'enctype="multipart/form-data"' in page.text
    content = csv_bytes(
        [["Email", "Name", "email_consent"], ["web@example.com", "<b>Web</b>", "yes"], ["bad", "", ""]]
    )
    files = {"file": ("<script>x</script>.csv", content, "text/csv")}
    forged = web.post("/imports", files=files, data={"csrf_token": "nope"})
    assert forged.status_code == 403
    token = csrf_from(page.text)
    sent = web.post(
        "/imports", files=files, data={"csrf_token": token, "source": "event"}, follow_redirects=False
    )
    assert sent.status_code == 303
    stub_worker()
    done = web.get("/imports").text
    assert "&lt;script&gt;x&lt;/script&gt;.csv" in done and "<script>x" not in done
    assert '<progress max="2" value="2"' in done and 'http-equiv="refresh"' not in done
    download = web.get("/imports/1/rejects.csv")
    assert download.status_code == 200 and "bad" in download.text


def test_form_errors_and_roles(web, make_staff) -> None:
    login(web, make_staff("sales"))
    token = csrf_from(web.get("/imports").text)
    empty = web.post("/imports", files={"file": ("x.csv", b"", "text/csv")}, data={"csrf_token": token})
    assert empty.status_code == 422 and "empty" in empty.text
    nameless = web.post(
        "/imports", files={"file": ("x.csv", b"Vorname\r\nMax\r\n", "text/csv")}, data={"csrf_token": token}
    )
    assert nameless.status_code == 422 and "no column holds" in nameless.text
    web.cookies.clear()
    login(web, make_staff("compliance", email="c@staff.example.com"))
    page = web.get("/imports")
    assert page.status_code == 200 and 'type="file"' not in page.text
    token = csrf_from(page.text)
    refused = web.post("/imports", files={"file": ("x.csv", b"email\r\na@example.com\r\n", "text/csv")},
                       data={"csrf_token": token})  # fmt: skip
    assert refused.status_code == 403
