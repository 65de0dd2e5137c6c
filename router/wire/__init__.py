"""Byte-level formats of the client APIs; no I/O."""
