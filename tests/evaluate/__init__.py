"""Tests of spectok_core.evaluate."""
