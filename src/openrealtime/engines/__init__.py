"""Model engines behind the Protocols in :mod:`openrealtime.engines.base`."""
