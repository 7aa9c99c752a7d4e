"""What a request parameter's value must be before it reaches a hash, a JSON parser or a
database column: the form and JSON decoders accept strings that no backend can compare."""

from __future__ import annotations


def encodable(value: str) -> bool:
    """Is ``value`` text at all? A lone surrogate (``"\\ud800"`` in JSON) has no UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable(value: str) -> bool:
    """Can ``value`` be compared with a database column? Not with a NUL byte (PostgreSQL) or a
    lone surrogate (no UTF-8 encoding; every backend fails), both of which JSON can carry."""
    return "\x00" not in value and encodable(value)
