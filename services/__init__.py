"""rectune services: embedding, scoring, policy, metrics."""
