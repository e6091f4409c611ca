"""All tables, imported together so that ``SQLModel.metadata`` is complete."""

from app.models.auth import ApiToken, AuditLog, User
from app.models.base import Channel, PreferenceStatus, Purpose, Role, Source, utcnow
from app.models.campaign import Campaign, Delivery
from app.models.compliance import DataRequest
from app.models.contact import Contact
from app.models.imports import Import, ImportReject, ImportSeen
from app.models.inbound import InboundMessage
from app.models.preference import ConsentEvent, Preference
from app.models.suppression import Suppression
from app.models.topic import Topic

__all__ = [
    "ApiToken",
    "AuditLog",
    "Campaign",
    "Channel",
    "ConsentEvent",
    "Contact",
    "DataRequest",
    "Delivery",
    "Import",
    "ImportReject",
    "ImportSeen",
    "InboundMessage",
    "Preference",
    "PreferenceStatus",
    "Purpose",
    "Role",
    "Source",
    "Suppression",
    "Topic",
    "User",
    "utcnow",
]
