"""Test suite: real QM9 subsets and data the tests make (see conftest.py)."""
