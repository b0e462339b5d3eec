"""End-to-end tests of the worker runtime against a real LiveKit server."""
