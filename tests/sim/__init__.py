"""The simulated providers speak the real wire formats."""
