"""Anthropic Messages wire format: requests, replies, errors and rate-limit headers."""
