"""ClaimX: the REST API client, the entity tables it fills, and the enrichment of events."""
