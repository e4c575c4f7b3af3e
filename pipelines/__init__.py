"""Loopline's pure domain: events, configuration, classification and planning.

Nothing here performs I/O, so every rule can be tested with plain tables.
"""
