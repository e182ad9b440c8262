"""The OCI distribution client: transport (sessions, TLS), auth (challenges), client (API)."""
