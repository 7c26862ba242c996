"""Zero-shot LLM strategies: verbalizer, pointwise, listwise (registered in :mod:`llm_recommender.scorers`)."""
