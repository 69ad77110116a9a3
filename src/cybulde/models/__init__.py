"""Model composition: a Hugging Face encoder backbone, an optional adapter and a head."""
