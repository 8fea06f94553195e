"""Normalisation: validate readings from any source and derive per-interval consumption."""
