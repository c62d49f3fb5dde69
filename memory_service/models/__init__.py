"""Operator features: the local model registry and the lifecycle of vLLM servers."""
