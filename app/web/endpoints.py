"""Staff web UI (server-rendered, autoescaped). Filled in by the web module."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
