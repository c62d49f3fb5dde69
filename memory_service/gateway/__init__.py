"""The OpenAI-compatible gateway: `/v1/chat/completions` (routing, failover, escalation to
cloud within a budget, memory context), `/v1/embeddings` and `/v1/models`."""
