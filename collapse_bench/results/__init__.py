"""Result documents: schema, validation, provenance."""

from .schema import SCHEMA_VERSION, validate_result, write_result

__all__ = ["SCHEMA_VERSION", "validate_result", "write_result"]
