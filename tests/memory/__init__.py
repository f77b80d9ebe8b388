"""Memory-package tests (a package: tests/streams has a test_lifetimes.py too)."""
