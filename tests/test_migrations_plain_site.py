"""Every migration runs in a site that does not define DOT's model settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_migrate_without_dots_model_settings():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings_plain_site"}
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--noinput", "-v", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Applying token_exchange.0006_trust... OK" in result.stdout
