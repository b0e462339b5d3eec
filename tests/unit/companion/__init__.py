"""Unit tests of the companion that is injected into an unmodified livekit-agents worker."""
