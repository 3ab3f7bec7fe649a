"""Helpers shared by the unit tests."""
