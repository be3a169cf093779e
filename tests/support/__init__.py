"""Helpers shared by test modules (oracles, message builders); fixtures stay in conftest.py."""
