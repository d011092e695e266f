"""Chat with your documents: upload, ingestion, scope, retrieval and citations (docs/documents.md)."""
