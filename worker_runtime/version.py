"""The runtime's version, reported to LiveKit at registration and on /worker."""

__version__ = "0.1.0"
