"""Event-streaming omnichannel profile builder."""

__version__ = "0.1.0"
