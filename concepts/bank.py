"""A concept bank: one direction per concept in an embedding space, and each image's margin to it.

Post-hoc concept bottleneck models (PCBM; Yuksekgonul et al., ICLR 2023, the
``ConceptBank`` of ``concepts/concept_utils.py`` in mertyg/post-hoc-cbm) describe a
concept by a vector ``v`` and an intercept ``b`` in a backbone's embedding space and
score an image by its signed distance to that hyperplane: ``(v . emb + b) / ||v||``.
Two routes fill the bank:

- CAVs (``fit_cavs``): a linear SVM per concept separates the embeddings of images that
  show the concept from images that do not; ``v`` and ``b`` are the SVM's. PCBM's
  ``learn_concepts_dataset.py`` does this with ``SVC(kernel="linear", C=C)`` for C in
  {0.001, 0.01, 0.1}; the ``cav`` and ``nmf`` banks use C = 0.1 and keep a held-out
  quarter of the examples to report how well each concept separates.
- Text embeddings (``clip_bank``): a concept word's unit-norm CLIP text embedding, with
  ``b = 0``; the image side is CLIP's image encoder (the release's
  ``learn_concepts_multimodal.py``).

``embed`` maps images as the dataset stores them to the embeddings, differentiably, so
attribution (``concepts/attribution.py``) can take pixel gradients of a margin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from data.rng import generator

CAV_C = 0.1  # PCBM's largest C; the embeddings here separate well without stronger regularisation


@dataclass
class ConceptBank:
    """Concept names, their directions (K x D) and intercepts (K), and the image -> embedding map."""

    kind: str
    names: list[str]
    vectors: torch.Tensor
    intercepts: torch.Tensor
    embed: Callable[[torch.Tensor], torch.Tensor]
    val_accuracy: dict[str, float] = field(default_factory=dict)

    def margins(self, emb: torch.Tensor) -> torch.Tensor:
        """N x D embeddings -> N x K signed distances to each concept's hyperplane."""
        v = self.vectors.to(emb.device, emb.dtype)
        return (emb @ v.T + self.intercepts.to(emb.device, emb.dtype)) / v.norm(dim=1)

    def concept_scores(self, images: torch.Tensor) -> torch.Tensor:
        """Stored images -> N x K margins, differentiable in the images."""
        return self.margins(self.embed(images))

    @torch.no_grad()
    def scores(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """N x K margins on the CPU, in batches (no gradients)."""
        return torch.cat([self.concept_scores(images[i:i + batch_size]).float().cpu()
                          for i in range(0, len(images), batch_size)]) if len(images) else torch.zeros(0)


def model_embedder(model: torch.nn.Module, to_input: Callable[[torch.Tensor], torch.Tensor]
                   ) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's own embedding (its second output) of stored images, in eval mode."""
    def embed(images: torch.Tensor) -> torch.Tensor:
        was = model.training
        model.eval()
        try:
            return model(to_input(images))[1]
        finally:
            model.train(was)
    return embed


@torch.no_grad()
def embed_all(embed: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int = 256
              ) -> np.ndarray:
    """Embeddings of every image, as a float64 array for scikit-learn."""
    parts = [embed(images[i:i + batch_size]).double().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(parts).numpy()


def examples(scores: np.ndarray, quantile: float, seed: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows that express a concept most (positives) and least (negatives): the top and bottom ``quantile``.

    Ties (many images score 0 holes, say) are broken by a seeded random order, so the
    split is the same for a seed and never favours low row numbers.
    """
    n = len(scores)
    take = max(2, int(round(quantile * n)))
    tiebreak = torch.randperm(n, generator=generator(seed, f"concepts/tiebreak/{name}")).numpy()
    order = np.lexsort((tiebreak, scores))  # ascending score, random among equals
    return order[-take:], order[:take]


def fit_cavs(names: list[str], scores: np.ndarray, emb: np.ndarray, quantile: float, seed: int
             ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """One linear SVM per concept (column of ``scores``) on the embeddings ``emb``.

    Returns the K x D vectors, K intercepts and each concept's accuracy on a held-out
    quarter of its examples (the check that the concept is linearly present at all).
    """
    from sklearn.svm import SVC  # imported on use: scikit-learn takes seconds to import

    vectors, intercepts, accuracy = [], [], {}
    for k, name in enumerate(names):
        pos, neg = examples(scores[:, k], quantile, seed, name)
        x = np.concatenate([emb[pos], emb[neg]])
        y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
        perm = torch.randperm(len(y), generator=generator(seed, f"concepts/holdout/{name}")).numpy()
        cut = len(y) * 3 // 4
        fit, held = perm[:cut], perm[cut:]
        svm = SVC(kernel="linear", C=CAV_C).fit(x[fit], y[fit])
        accuracy[name] = float(svm.score(x[held], y[held]))
        vectors.append(torch.from_numpy(svm.coef_[0].astype(np.float32)))
        intercepts.append(float(svm.intercept_[0]))
    return torch.stack(vectors), torch.tensor(intercepts, dtype=torch.float32), accuracy
