"""Embedded stack launcher and deployment files."""
