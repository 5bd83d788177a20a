"""The tuner controller: proposes configurations and manages arms (not implemented yet)."""
