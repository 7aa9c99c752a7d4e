from __future__ import annotations

from django.apps import AppConfig


class SwappedConfig(AppConfig):
    name = "tests.swapped"
    label = "swapped"
    verbose_name = "Swapped OAuth models"
    default_auto_field = "django.db.models.BigAutoField"
