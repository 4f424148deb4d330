"""Bench-only: a bare DRF service over the same table shape as the expenses (no auth, no
tenancy, no idempotency, no change log, no replicas, no metrics): the baseline of
`make bench-origin` (bench/origin.py). Its own settings, URLs and WSGI app; never
installed in the project's settings."""
