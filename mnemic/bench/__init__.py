"""Benchmarks that need no LLM: embedders, LoCoMo retrieval."""
