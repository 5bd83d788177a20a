"""The local demo: simulated users built from MovieLens interactions drive the whole loop
(``python -m demo``, ``make demo``) and a report is written. Not a service: it is not in
the service image, and matplotlib (its plots) is its own extra, ``.[demo]``."""
