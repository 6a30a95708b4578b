"""`sila demo`: a generated corpus, ingested and curated end to end."""
