"""A fixture package for tests/test_collect.py."""
