"""Impersonation: the facts about users (``facts``), the one decision every entry point
asks (``decision``), sessions started from the admin (``sessions``) and their banner, who
may grant a role (``role_grants``), and the guard that keeps impersonated tokens out of
privileged places.
"""
