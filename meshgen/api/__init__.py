"""The HTTP API (rollout API, status page, webhooks)."""
