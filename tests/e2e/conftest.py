"""Fixtures of the end-to-end tests."""

from tests.e2e.cluster import cluster

__all__ = ["cluster"]
