"""Training data out: WebDataset/Energon shards, selections, buckets, mixtures, cards, snapshots."""
