"""Impersonation on Django's own user admin, as an app to opt into.

``INSTALLED_APPS = [..., "django.contrib.admin", "django.contrib.auth", ...,
"token_exchange", "token_exchange.contrib.user_admin"]``: once the admin has found every
``admin.py``, the user model's admin is registered again with
``token_exchange.admin.ImpersonationUserAdminMixin`` (the impersonator roles inline and the
*Impersonate* button) under its own class name. A site with its own user admin adds the mixin to
it instead and leaves this app out.
"""
