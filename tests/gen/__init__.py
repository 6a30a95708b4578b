"""Generated test data with known truth (filter cases, near-duplicate sets)."""
