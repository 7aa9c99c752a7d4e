"""OAuth 2.0 Token Exchange (RFC 8693) and impersonation for django-oauth-toolkit."""

__version__ = "0.1.0.dev0"
