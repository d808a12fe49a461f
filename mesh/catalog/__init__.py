"""The catalog: entity state, metadata and relation indexes folded from change events."""
