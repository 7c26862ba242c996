"""Scorers without an LLM: random, popularity, co-occurrence, MiniLM text similarity, implicit CF (ALS, BPR, item-kNN)."""
