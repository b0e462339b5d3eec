"""Example agents for the worker runtime (the seeds' examples, runnable as modules)."""
