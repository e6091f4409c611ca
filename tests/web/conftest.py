"""Fixtures for the staff UI: an HTTPS test client (the session cookie is ``Secure`` when the
public URL is https, as in the test settings) and a staff user who can log in."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from app.auth.service import create_user
from app.config import Settings
from app.db import session_scope

PASSWORD = "correct horse battery staple"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass(frozen=True)
class Staff:
    id: int
    email: str
    password: str
    role: str


def csrf_from(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF field in the page"
    return match.group(1)


@pytest.fixture
def web(app) -> Iterator[TestClient]:
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c:
        yield c


@pytest.fixture
def make_staff(db: Settings) -> Callable[..., Staff]:
    def make(role: str = "sales", email: str | None = None) -> Staff:
        address = email or f"{role}@staff.example.com"
        with session_scope(db) as s:
            user = create_user(s, email=address, name=f"Staff {role.title()}", role=role, password=PASSWORD)
            assert user.id is not None
            return Staff(id=user.id, email=address, password=PASSWORD, role=role)

    return make


@pytest.fixture
def staff(make_staff: Callable[..., Staff]) -> Staff:
    return make_staff("sales")


def login(client: TestClient, who: Staff) -> None:
    token = csrf_from(client.get("/login").text)
    r = client.post("/login", data={"email": who.email, "password": who.password, "csrf_token": token})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/"


@pytest.fixture
def logged_in(web: TestClient, staff: Staff) -> TestClient:
    login(web, staff)
    return web
