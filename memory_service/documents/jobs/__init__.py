"""Ingestion jobs: `POST /v1/ingest/jobs` queues, workers run the documents pipeline.

(routes)       `api/ingest_jobs.py`, HTTP only
schemas.py     request and response bodies
service.py     validation (limits, the path allow-list) and reads
paths.py       the server-side path allow-list
repository.py  all SQL of the queue, the work query among it
worker.py      claims, runs (the existing `Ingestor`), retries, dead-letters

`memory-service worker` is `cli/jobs.py`.
"""
