"""The OCI distribution client: endpoint (the model it is given: URL, TLS, credentials),
transport (sessions, TLS), body (bounded reads), targets (where a request may go), auth
(challenges), retry, client (reads), writer (writes), api (blobs, manifests and tags, and
the copy steps push and the registry sink share)."""
