"""Suppression reasons and how strongly each one binds."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    UNSUBSCRIBE = "unsubscribe"
    ONE_CLICK = "one_click"
    REPLY = "reply"
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    MANUAL_REQUEST = "manual_request"
    ERASURE = "erasure"
    UNDERAGE = "underage"
    INVALID = "invalid"
    DOMAIN_BLOCK = "domain_block"
    ROLE = "role"


class Origin(StrEnum):
    RECIPIENT = "recipient"
    STAFF = "staff"
    SYSTEM = "system"


#: Reasons that block every purpose, service mail included.
BLOCKING_REASONS: frozenset[str] = frozenset(
    {
        Reason.HARD_BOUNCE,
        Reason.COMPLAINT,
        Reason.ERASURE,
        Reason.UNDERAGE,
        Reason.INVALID,
        Reason.DOMAIN_BLOCK,
    }
)
#: Marketing opt-outs: they block marketing mail only, and only the person can undo them.
OPT_OUT_REASONS: frozenset[str] = frozenset(r.value for r in Reason) - BLOCKING_REASONS

#: Order in which the gate names a reason when several apply (first wins).
REASON_PRIORITY: tuple[str, ...] = (
    Reason.ERASURE,
    Reason.UNDERAGE,
    Reason.COMPLAINT,
    Reason.HARD_BOUNCE,
    Reason.INVALID,
    Reason.DOMAIN_BLOCK,
    Reason.ONE_CLICK,
    Reason.UNSUBSCRIBE,
    Reason.REPLY,
    Reason.MANUAL_REQUEST,
    Reason.ROLE,
)
