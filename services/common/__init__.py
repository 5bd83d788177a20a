"""Shared runtime of every rectune service: server bootstrap, settings, errors, clients."""
