"""The LLM ranker: the bundle's LLM fine-tuned into a listwise ranker (bundle component ``llm_ranker``).

Modules: :mod:`.hints` (collaborative hints in the prompt), :mod:`.examples` (training examples),
:mod:`.scorer` (prompt and scoring), :mod:`.training` (the fine-tuning run), :mod:`.component`.
"""
