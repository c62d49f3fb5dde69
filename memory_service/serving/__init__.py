"""Model serving, for operators: the local model registry (hub downloads) and the lifecycle
of the vLLM servers this service starts."""
