"""Pure code tested from tables: no sockets."""
