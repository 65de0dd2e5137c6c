"""LLM API failover router."""
