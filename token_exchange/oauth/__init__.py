"""How the package plugs into django-oauth-toolkit and oauthlib: the oauthlib servers with
the grant registered, DOT's backend and request validator, the endpoints' views, discovery
metadata, introspection, userinfo and the staff-only application pages.
"""
