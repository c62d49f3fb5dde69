"""What an operator asks of a running service: readiness (`readiness.py`) and metrics
(`metrics.py`). Services over the process's `Resources`; the routes in `api/` render them."""
