"""The database seam of the hot path: reading one row (``lookups``), writing an exchange's
rows (``inserts``), and the one module allowed Django's private ORM internals.
"""
