"""Where tests/settings_multidb.py keeps each model: none in "default".

Every model, the package's and DOT's included, lives in "primary", except Django's sessions,
which live in "sessions" (a deployment may well keep them apart). Code that reaches for the
default connection (``transaction.atomic()``, ``connection.cursor()`` without
``router.db_for_*``) finds no database there and fails.
"""

from __future__ import annotations

from typing import Any

PRIMARY = "primary"
SESSIONS = "sessions"


def _alias(model: Any) -> str:  # a model, or an instance (even behind a SimpleLazyObject)
    return SESSIONS if model._meta.app_label == "sessions" else PRIMARY


class Router:
    def db_for_read(self, model: Any, **hints: Any) -> str:
        return _alias(model)

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return _alias(model)

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return _alias(obj1) == _alias(obj2)

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool:
        return db == (SESSIONS if app_label == "sessions" else PRIMARY)
