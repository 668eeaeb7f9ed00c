"""Shared mechanisms of the code location. Nothing here imports a domain."""
