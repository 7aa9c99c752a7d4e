"""DOT's five swappable models, swapped (tests/settings_swapped.py): the package must reach DOT's
tokens through ``get_*_model()`` and ``oauth2_settings``, never ``oauth2_provider.AccessToken``."""
