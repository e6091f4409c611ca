"""References that PostgreSQL enforces with statement-level triggers instead of foreign
keys (migrations 0009 and 0012: a foreign key is checked row by row, one query per row,
which was a quarter of an import's database time). The models keep declaring them as
foreign keys: SQLite enforces them as such, and they document the schema."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKeyConstraint

#: (table, column) of each reference checked by trigger on PostgreSQL: to ``contact.id``
#: (migration 0009), and to the actor of a consent event (0012).
TRIGGER_CHECKED = frozenset(
    {
        ("preference", "contact_id"),
        ("consent_event", "contact_id"),
        ("consent_event", "actor_user_id"),
        ("consent_event", "actor_token_id"),
    }
)


def include_object(dialect_name: str) -> Any:
    """Alembic's ``include_object`` hook for comparing the models with a database of this
    dialect: on PostgreSQL the trigger-checked references are no foreign keys."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if dialect_name != "postgresql" or type_ != "foreign_key_constraint":
            return True
        assert isinstance(obj, ForeignKeyConstraint)
        table = obj.parent.name if obj.parent is not None else None
        return not any((table, column) in TRIGGER_CHECKED for column in obj.column_keys)

    return include
