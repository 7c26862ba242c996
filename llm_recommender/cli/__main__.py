"""``python -m llm_recommender.cli``: the same as the ``llm-rec`` console script."""

from . import main

main()
