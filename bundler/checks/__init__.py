"""Checks on what a source yields: a bundle's stream and its OCI layout."""
