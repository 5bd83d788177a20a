"""loadgen: simulated users and the local demo that drives the whole loop."""
