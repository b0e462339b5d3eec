"""The trivial agent the benchmark runs, once per runtime.

Both agent modules record the moment their entrypoint runs through `record` (standard library
only, so that it imports in either virtual environment) and end the job at once, without joining
the room.
"""
