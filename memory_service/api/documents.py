"""HTTP routes of the documents API."""

import hashlib

from fastapi import APIRouter, Response, status

from memory_service.api.deps import CanWrite, IngestorDep, Meter
from memory_service.documents.loaders import LoadedDocument
from memory_service.documents.schemas import DocumentIn, DocumentOut

router = APIRouter(prefix="/v1/documents", tags=["documents"])


@router.post("", response_model=DocumentOut, status_code=status.HTTP_201_CREATED)
async def ingest_document(
    body: DocumentIn, ingestor: IngestorDep, response: Response, caller: CanWrite, meter: Meter
) -> DocumentOut:
    """Chunk, embed and store one document now; unchanged content is a no-op (200)."""
    caller.namespaces.check(body.namespace)
    meter.charge([body.text])
    source_uri = body.source_uri or f"api:sha256:{hashlib.sha256(body.text.encode()).hexdigest()}"
    document = LoadedDocument(source_uri, body.title, body.text, dict(body.metadata))
    stored = await ingestor.ingest_one(document, body.namespace, caller.actor)
    if stored.status == "unchanged":
        response.status_code = status.HTTP_200_OK
    return stored
