"""Notifications (being written)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.app import Collab


def install(collab: Collab, tasks: asyncio.TaskGroup) -> None:
    """Register the feature's handlers and observers on ``collab``."""
