"""Alembic revision files (one per schema change)."""
