"""Persistent memory: timestamped notes (this step) and, later, a FAISS vector store over them."""
