"""Text utilities every stage shares: reading documents (ingest), reflowing and splitting them into
sentences (reflow), sections and chunks (chunk), words and stop words (words). Nothing here imports
a stage (forge, judge, train) or MLflow: tests/test_layout.py holds that."""
