"""``duomem run`` and ``duomem demo``."""

from __future__ import annotations
