"""WSGI entry point of the example resource server."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_resource_server.settings")

application = get_wsgi_application()
