"""The outbox: the records written (and read back), the archive, the quarantine, reviews."""
