"""Delta Lake: the resource (local, Azure Blob, OneLake), latest-state entity MERGEs, and the
data-quality checks run on what a run wrote."""
