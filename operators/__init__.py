"""Operators' surfaces: the ``rectune`` command line and the web dashboard. Clients of the
services like the tuner: they meet them only through rectune.v1 and services.common."""
