"""openrealtime: a self-hosted server that speaks the OpenAI Realtime API on local models."""

__version__ = "0.1.0"
