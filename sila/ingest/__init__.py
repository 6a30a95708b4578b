"""Ingest: files, folders, globs, manifests and object-store prefixes become rows of `sources`."""
