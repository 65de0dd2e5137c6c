"""Pure rules: no await, no clock, no I/O; tested from tables."""
