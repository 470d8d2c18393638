"""The Judge: golden-set evaluation.

offline.py (key-fact check + similarity, no API) and llm_judge.py (OpenAI/Anthropic) score
answers 1-5; stats.py gives bootstrap intervals; evaluate.py runs `baseline` and `evaluate`
and compares them; baseline.py is the baseline stage's entry point.
"""
