"""Executors: how a job's fragment work runs (inline, fresh processes, Ray actor pools)."""
