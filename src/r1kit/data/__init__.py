"""Data: ingest any common format into one record shape, clean it with an auditable report, tokenize it,
and synthesise verifiable tasks."""
