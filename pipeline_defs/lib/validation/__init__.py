"""Untrusted input made safe to keep: bounded field types, JSON as RFC 8259 defines it, and
time-zone-aware instants inside what Python, Arrow and Delta hold."""
