"""Every ``/api/v1`` route is guarded by exactly one ``Require``; tokens, revocation, audit."""

from __future__ import annotations

import hashlib
import re

import sqlalchemy as sa
from fastapi.routing import APIRoute
from sqlmodel import Session, select

from app.db import get_engine
from app.deps import Require
from app.models import ApiToken, AuditLog, Role, utcnow

ALL_ROLES = tuple(Role)


def _requires(dependant) -> list[Require]:
    found: list[Require] = []
    for dep in dependant.dependencies:
        if isinstance(dep.call, Require):
            found.append(dep.call)
        found.extend(_requires(dep))
    return found


def _api_routes(app) -> list:
    """Every ``APIRoute`` under ``/api/v1``, with its full path, methods and dependant.

    FastAPI >= 0.16x keeps included routers lazily (``app.routes`` holds ``_IncludedRouter``
    entries); ``iter_route_contexts`` yields each effective route with its combined path and
    dependencies. Older versions list the ``APIRoute`` objects directly."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: included routes are flattened into app.routes
        contexts = list(app.routes)
    else:
        contexts = list(iter_route_contexts(app.routes))
    routes = []
    for ctx in contexts:
        original = getattr(ctx, "original_route", ctx)
        if isinstance(original, APIRoute) and (ctx.path or "").startswith("/api/v1"):
            routes.append(ctx)
    return routes


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_there_are_api_routes_to_check(app):
    paths = {r.path for r in _api_routes(app)}
    for expected in ("/api/v1/contacts", "/api/v1/contacts/{contact_id}", "/api/v1/suppressions"):
        assert expected in paths, sorted(paths)


def test_every_api_route_requires_exactly_one_role_check(app):
    problems = []
    for route in _api_routes(app):
        found = _requires(route.dependant)
        if len(found) != 1:
            problems.append(f"{sorted(route.methods)} {route.path}: {len(found)} Require dependencies")
    assert not problems, "\n".join(problems)


def test_every_api_route_enforces_its_roles(app, client, token_for):
    headers = {role: token_for(role.value) for role in ALL_ROLES}
    problems: list[str] = []
    checked = 0
    for route in _api_routes(app):
        found = _requires(route.dependant)
        if len(found) != 1:
            problems.append(f"{route.path}: {len(found)} Require dependencies")
            continue
        require = found[0]
        assert Role.ADMIN in require.roles
        url = _concrete(route.path)
        for method in sorted(route.methods):
            name = f"{method} {route.path}"

            def call(extra: dict[str, str] | None, method=method, url=url):
                return client.request(method, url, headers=extra or {})

            status = call(None).status_code
            if status != 401:
                problems.append(f"{name}: no token -> {status}, expected 401")
            for garbage in ("garbage", "lw_" + "x" * 43, "lw_"):
                status = call({"Authorization": f"Bearer {garbage}"}).status_code
                if status != 401:
                    problems.append(f"{name}: garbage token {garbage!r} -> {status}, expected 401")
            good = headers[Role.ADMIN]["Authorization"].split(" ", 1)[1]
            status = call({"Authorization": f"Basic {good}"}).status_code
            if status != 401:
                problems.append(f"{name}: non-bearer scheme -> {status}, expected 401")
            for role in ALL_ROLES:
                status = call(headers[role]).status_code
                if role in require.roles:
                    if status in (401, 403) or status >= 500:
                        problems.append(f"{name}: allowed role {role} -> {status}")
                elif status != 403:
                    problems.append(
                        f"{name}: role {role} not in {sorted(require.roles)} -> {status}, want 403"
                    )
            checked += 1
    assert not problems, "\n".join(problems)
    assert checked >= 10


def test_require_roles_always_include_admin():
    assert Require(Role.SALES).roles == {Role.SALES, Role.ADMIN}
    assert Require().roles == {Role.ADMIN}


def test_revoked_token_is_refused(client, token_for, db):
    headers = token_for("compliance")
    assert client.get("/api/v1/contacts", headers=headers).status_code == 200
    plain = headers["Authorization"].split(" ", 1)[1]
    digest = hashlib.sha256(plain.encode()).hexdigest()
    with Session(get_engine(db)) as s:
        row = s.exec(select(ApiToken).where(ApiToken.token_hash == digest)).one()
        row.revoked_at = utcnow()
        s.add(row)
        s.commit()
    r = client.get("/api/v1/contacts", headers=headers)
    assert r.status_code == 401, r.text
    assert "Bearer" in r.headers.get("www-authenticate", "")


def test_tokens_are_stored_hashed(token_for, db):
    plain = token_for("sales")["Authorization"].split(" ", 1)[1]
    assert plain.startswith("lw_") and len(plain) > 40
    with get_engine(db).connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM api_token")).mappings().all()
    assert rows
    for row in rows:
        for value in row.values():
            if isinstance(value, str):
                assert plain not in value, f"plain token stored in api_token: {value!r}"
    hashes = {row["token_hash"] for row in rows}
    assert hashlib.sha256(plain.encode()).hexdigest() in hashes
    assert all(len(row["prefix"]) < len(plain) for row in rows)


def test_staff_actions_are_audited(client, token_for, admin_headers, db):
    sales = token_for("sales")
    compliance = token_for("compliance")
    r = client.post("/api/v1/contacts", json={"email": "audit@example.com", "name": "Aud"}, headers=sales)
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    r = client.post(
        "/api/v1/suppressions",
        json={"address": "other@example.com", "method": "letter"},
        headers=sales,
    )
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    r = client.delete(
        f"/api/v1/suppressions/{sid}", params={"note": "sent by mistake"}, headers=admin_headers
    )
    assert r.status_code == 200, r.text
    r = client.delete(f"/api/v1/contacts/{cid}", headers=compliance)
    assert r.status_code == 200, r.text

    with Session(get_engine(db)) as s:
        rows = s.exec(select(AuditLog).order_by(AuditLog.id)).all()  # type: ignore[arg-type]
        tokens = {t.id: t.role for t in s.exec(select(ApiToken)).all()}
    by_action = {(r.action, r.target_type, r.target_id): r for r in rows}
    create = by_action[("contact.create", "contact", str(cid))]
    assert create.actor_role == "sales" and tokens[create.actor_token_id] == "sales"
    add = by_action[("suppression.add", "suppression", str(sid))]
    assert add.actor_role == "sales"
    lift = by_action[("suppression.lift", "suppression", str(sid))]
    assert lift.actor_role == "admin" and lift.detail.get("note") == "sent by mistake"
    erase = by_action[("contact.erase", "contact", str(cid))]
    assert erase.actor_role == "compliance" and erase.detail.get("reason") == "erasure"
    assert erase.ip == "testclient"
