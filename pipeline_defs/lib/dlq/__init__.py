"""Dead letters: records with their reasons (and claim checks for the oversized), a Delta view
per DLQ topic, its health, and the replay, resolve and purge operations."""
