"""Frozen pydantic config schemas and YAML loading. Imports nothing heavy (no torch)."""
