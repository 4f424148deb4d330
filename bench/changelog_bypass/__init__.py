"""Bench-only app: the write path as it was before the change log (no counter row, no
outbox row; the same handlers run on commit), to measure what the log costs. Never in
production settings: it gives up crash safety and ordering."""
