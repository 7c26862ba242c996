"""The eval harness behind ``llm-rec eval`` (a door, like the CLI and the server): it ranks cases through
``Recommender`` and measures them. Its building blocks live below it: splits and cases in
:mod:`llm_recommender.data.splits`, metrics in :mod:`llm_recommender.metrics`.

>>> from llm_recommender.data import load_dataset
>>> from llm_recommender.data.splits import llmrank_cases
>>> from llm_recommender.metrics import ranking_metrics, target_rank
>>> ds = load_dataset("ml-100k", "../shared/data/ml-100k")
>>> cases = llmrank_cases(ds, split="test", n_users=200, seed=0)
>>> # results = scorer.score_many([c.request for c in cases])
>>> # ranking_metrics(target_rank(r.scores, c.ground_truth_index) for r, c in zip(results, cases))
"""
