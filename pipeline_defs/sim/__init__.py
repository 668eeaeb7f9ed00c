"""Sample data for local runs and tests: realistic XACT and ClaimX events, an attachment host,
the ClaimX API double and its media host."""
