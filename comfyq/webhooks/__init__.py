"""Webhooks a receiver can trust: signed per Standard Webhooks, kept in a Redis outbox, delivered
in order per run, retried for about a day, dead-lettered (never dropped) when that fails.

Modules: `settings` (COMFYQ_WEBHOOK_* settings), `signing` (headers and receiver-side
verification), `safety` (which URLs may be called), `transport` (one HTTP attempt), `outbox`
(events, ordering, retries, dead letters), `cli` (`comfyq webhooks ...`).
"""
