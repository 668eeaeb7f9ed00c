"""Sample data for local runs and tests: realistic events and an attachment host."""
