"""Chat with your documents: upload, ingestion, scope, retrieval, citations (docs/documents.md)."""
