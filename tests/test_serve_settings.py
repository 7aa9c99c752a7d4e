"""`make serve`: the example's settings and gunicorn configuration for several processes.

Settings are read once per process, so each case reads them in a process of its own with the
environment `make serve` (or a careless operator) gives it.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
STRONG_KEY = "k" * 20 + "0123456789abcdefghijklmnopqrstuvwxyz"

READ_SETTINGS = """
import json
import django

django.setup()
from django.conf import settings

print(json.dumps({
    "debug": settings.DEBUG,
    "caches": settings.CACHES,
    "database": {key: settings.DATABASES["default"][key] for key in ("CONN_MAX_AGE", "CONN_HEALTH_CHECKS")},
    "request_logger": settings.LOGGING["loggers"].get("django.request"),
    "issuer": settings.OAUTH2_PROVIDER["OIDC_ISS_ENDPOINT"],
}))
"""


def read_settings(**env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key
        not in ("DJANGO_DEBUG", "DJANGO_SECRET_KEY", "REDIS_URL", "DATABASE_CONN_MAX_AGE", "DEMO_ORIGIN")
    }
    environment.update(DJANGO_SETTINGS_MODULE="example_project.settings", **env)
    return subprocess.run(
        [sys.executable, "-c", READ_SETTINGS],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "key",
    [None, "", " ", "x", "django-insecure-" + "a" * 50, "ab" * 30],
    ids=["unset", "empty", "blank", "short", "django's placeholder", "five characters at most"],
)
def test_debug_off_refuses_a_missing_or_weak_secret_key(key):
    env = {"DJANGO_DEBUG": "0"}
    if key is not None:
        env["DJANGO_SECRET_KEY"] = key
    result = read_settings(**env)
    assert result.returncode != 0
    assert "ImproperlyConfigured: DJANGO_DEBUG=0 needs DJANGO_SECRET_KEY" in result.stderr
    if key and len(key) >= 20:
        assert key not in result.stderr  # the key itself is never printed


def test_what_make_serve_sets_is_what_several_processes_need():
    result = read_settings(
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=STRONG_KEY,
        REDIS_URL="redis://127.0.0.1:6379/1",
        DATABASE_CONN_MAX_AGE="600",
    )
    assert result.returncode == 0, result.stderr
    served: dict[str, Any] = json.loads(result.stdout)
    assert served["debug"] is False
    # The replay store and the throttle's cache, shared by every process, giving up in a second.
    redis = {"socket_connect_timeout": 1, "socket_timeout": 1}
    assert served["caches"] == {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/1",
            "OPTIONS": redis,
            "KEY_PREFIX": "example",
        },
        "token_exchange_replay": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/1",
            "OPTIONS": redis,
            "KEY_PREFIX": "replay",
        },
    }
    assert served["database"] == {"CONN_MAX_AGE": 600, "CONN_HEALTH_CHECKS": True}
    assert served["request_logger"] == {"handlers": ["console"], "level": "ERROR"}
    assert served["issuer"] == "http://127.0.0.1:8000/o"


def test_make_demo_keeps_one_process_with_local_memory():
    result = read_settings()
    assert result.returncode == 0, result.stderr
    demo: dict[str, Any] = json.loads(result.stdout)
    assert demo["debug"] is True
    assert {alias: config["BACKEND"] for alias, config in demo["caches"].items()} == {
        "default": "django.core.cache.backends.locmem.LocMemCache",
        "token_exchange_replay": "django.core.cache.backends.locmem.LocMemCache",
    }
    assert demo["database"] == {"CONN_MAX_AGE": 0, "CONN_HEALTH_CHECKS": True}
    assert demo["request_logger"] is None


def test_gunicorn_freezes_what_the_master_loaded_and_each_worker_collects_again(monkeypatch):
    """preload_app with the collector off while Django loads, gc.freeze() before each fork,
    gc.enable() in each worker (docs/deployment.md measures why)."""
    import gc

    monkeypatch.setenv("WEB_CONCURRENCY", "5")
    monkeypatch.setenv("BIND", "127.0.0.1:9999")
    was_enabled = gc.isenabled()
    try:
        config = runpy.run_path(str(ROOT / "example_project" / "gunicorn.conf.py"))
        assert not gc.isenabled()
        assert (config["workers"], config["bind"], config["worker_class"]) == (5, "127.0.0.1:9999", "sync")
        assert config["preload_app"] is True
        assert config["accesslog"] is None
        assert config["control_socket_disable"] is True
        frozen_before = gc.get_freeze_count()
        config["pre_fork"](None, None)
        assert gc.get_freeze_count() > frozen_before
        worker = type("Worker", (), {})()
        config["post_fork"](None, worker)
        assert gc.isenabled()
        # After its warm-up requests, a worker freezes what they loaded for good, once.
        for _ in range(config["WARM_REQUESTS"] - 1):
            config["post_request"](worker, None, None, None)
        before_warm = gc.get_freeze_count()
        leftover = [[] for _ in range(100)]  # objects the warm-up left behind
        config["post_request"](worker, None, None, None)
        assert gc.get_freeze_count() >= before_warm + len(leftover)
        # Later requests freeze nothing more. The count may still fall (a frozen object whose
        # last reference goes is freed), so it is compared with fresh objects, not for equality.
        after_warm = gc.get_freeze_count()
        later = [[] for _ in range(100)]
        config["post_request"](worker, None, None, None)
        assert gc.get_freeze_count() < after_warm + len(later)
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()
        else:
            gc.disable()
