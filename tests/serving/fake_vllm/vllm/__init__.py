"""A stand-in `vllm` package for the lifecycle tests (see entrypoints/openai/api_server.py).

Not a package of the test suite: the tests put `tests/serving/fake_vllm` on the child's
PYTHONPATH only, so `python -m vllm.entrypoints.openai.api_server` runs this.
"""
