"""Helpers shared by test modules: fleets, fakes, builders, real-service drivers.

A test module imports helpers from here, never from another test module; nothing here imports
a test module either (tests/unit/test_import_contract.py checks both).
"""
