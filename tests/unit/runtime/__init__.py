"""Unit tests of the worker runtime's pure modules (no LiveKit server, no process)."""
