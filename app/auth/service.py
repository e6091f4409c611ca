"""API tokens and staff users.

Tokens are ``lw_`` + 43 URL-safe characters (256 random bits); only their SHA-256 is
stored. Passwords are hashed with scrypt from the standard library."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import timedelta

from sqlmodel import Session, select

from app.auth import audit
from app.auth.actor import Actor
from app.errors import Conflict, ValidationProblem
from app.models import ApiToken, Role, User, utcnow

TOKEN_PREFIX = "lw_"  # noqa: S105  (a prefix, not a secret)
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    session: Session,
    role: Role | str,
    *,
    name: str = "",
    user_id: int | None = None,
    actor: Actor | None = None,
) -> tuple[ApiToken, str]:
    role = Role(role)
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name, role=role.value, token_hash=token_digest(plain), prefix=plain[:10], user_id=user_id
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor or Actor.system(),
        "token.create",
        target_type="api_token",
        target_id=row.id,
        detail={"role": role.value, "name": name},
    )
    return row, plain


def authenticate_token(session: Session, presented: str) -> ApiToken | None:
    if not presented.startswith(TOKEN_PREFIX) or len(presented) > 100:
        return None
    row = session.exec(select(ApiToken).where(ApiToken.token_hash == token_digest(presented))).first()
    if row is None or row.revoked_at is not None:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
        row.last_used_at = now
        session.add(row)
    return row


def revoke_token(session: Session, token_id: int, actor: Actor) -> None:
    row = session.get(ApiToken, token_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        audit.record(session, actor, "token.revoke", target_type="api_token", target_id=token_id)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def verify_password(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    _, salt_b64, digest_b64 = stored.split("$", 2)
    digest = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt_b64), **_SCRYPT)
    return hmac.compare_digest(digest, base64.b64decode(digest_b64))


def create_user(session: Session, *, email: str, name: str, role: Role | str, password: str | None) -> User:
    if password is not None and len(password) < 10:
        raise ValidationProblem("passwords need at least 10 characters", field="password")
    email = email.strip().lower()
    if session.exec(select(User).where(User.email == email)).first() is not None:
        raise Conflict(f"a user with email {email} exists", field="email")
    user = User(
        email=email,
        name=name,
        role=Role(role).value,
        password_hash=hash_password(password) if password else None,
    )
    session.add(user)
    session.flush()
    return user


def authenticate_user(session: Session, email: str, password: str) -> User | None:
    user = session.exec(select(User).where(User.email == email.strip().lower())).first()
    if user is None or not user.active:
        hash_password(password)  # same work either way: no user enumeration by timing
        return None
    if not verify_password(password, user.password_hash):
        return None
    user.last_login_at = utcnow()
    session.add(user)
    return user
