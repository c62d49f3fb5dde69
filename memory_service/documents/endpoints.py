"""HTTP routes of the documents API."""

import hashlib
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status

from memory_service.core.errors import ServiceUnavailable
from memory_service.documents.loaders import LoadedDocument
from memory_service.documents.pipeline import Ingestor
from memory_service.documents.schemas import DocumentIn, DocumentOut


def get_ingestor(request: Request) -> Ingestor:
    ingestor: Ingestor | None = request.app.state.resources.documents
    if ingestor is None:
        # This process's configuration (no tokenizer for the space), not the input: 503.
        raise ServiceUnavailable(request.app.state.resources.documents_unavailable)
    return ingestor


IngestorDep = Annotated[Ingestor, Depends(get_ingestor)]

router = APIRouter(prefix="/v1/documents", tags=["documents"])


@router.post("", response_model=DocumentOut, status_code=status.HTTP_201_CREATED)
async def ingest_document(
    body: DocumentIn, ingestor: IngestorDep, response: Response
) -> DocumentOut:
    """Chunk, embed and store one document now; unchanged content is a no-op (200)."""
    source_uri = body.source_uri or f"api:sha256:{hashlib.sha256(body.text.encode()).hexdigest()}"
    document = LoadedDocument(source_uri, body.title, body.text, dict(body.metadata))
    stored = await ingestor.ingest_one(document, body.namespace)
    if stored.status == "unchanged":
        response.status_code = status.HTTP_200_OK
    return stored
