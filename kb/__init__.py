"""kgverify knowledge base: ingest, embed, FAISS index, manifest, fact store, CLI."""
