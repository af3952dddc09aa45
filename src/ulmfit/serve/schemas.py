"""The request bodies of ``ulmfit serve`` (pydantic models; FastAPI validates them and
documents them at ``/docs``)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator


class Inputs(BaseModel):
    inputs: str | list[str] = Field(description="a text, or a list of texts")

    @field_validator("inputs")
    @classmethod
    def _not_empty(cls, v: str | list[str]) -> str | list[str]:
        texts = [v] if isinstance(v, str) else v
        if not texts:
            raise ValueError("an empty list")
        for i, t in enumerate(texts):
            if not t.strip():
                raise ValueError("an empty text" + ("" if isinstance(v, str) else f" at {i}"))
        return v


class PredictRequest(Inputs):
    top_k: int | None = Field(None, ge=1, description="only the k best labels")
    raw_scores: bool = Field(False, description="logits instead of probabilities")


class ExplainRequest(BaseModel):
    inputs: str = Field(description="one text")
    label: str | None = Field(None, description="the label to explain (default: the top one)")

    @field_validator("inputs")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("an empty text")
        return v
