"""The audit log: one hash-chained JSONL file per session (writer, reader, verifier)."""
