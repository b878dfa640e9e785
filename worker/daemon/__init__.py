"""The daemon: the inbox watched, files claimed, classified in batches, written to the outbox."""
