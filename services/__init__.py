"""rectune services: embedding, scoring, policy, metrics (and the loadgen)."""
