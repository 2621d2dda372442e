"""Concepts found without labels: non-negative factors of the model's convolutional activations.

ACE (Ghorbani et al., 2019) and CRAFT (Fel et al., 2023) discover concepts as recurring
activation patterns; CRAFT factorises a layer's non-negative activations A ~ U V with NMF
and reads each row of V as a concept. Here A holds every spatial position of the last
convolutional block (after its ReLU / pooling, so it is non-negative) of a sample of
training images; an image's presence of factor j is the largest coefficient it gets at
any position. The images with the highest and lowest presence are the factor's positive
and negative examples, and the CAV route of ``bank.fit_cavs`` turns them into directions
of the model's embedding, exactly as for the pixel-scored concepts. Names are
``nmf_0``, ``nmf_1``, ...: a discovered factor has no word; docs/concepts.md says how to
look at one (its top images).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from concepts import ConceptError
from data.rng import stream_seed

FIT_POSITIONS = 50_000  # spatial positions the factorisation is fitted on (a seeded sample)


def conv_activations(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """N x C x H x W activations of the model's last convolutional block (``features`` without its pooling head)."""
    layers = list(model.features.children())
    while layers and isinstance(layers[-1], (nn.AdaptiveAvgPool2d, nn.Flatten)):
        layers.pop()
    x = inputs
    for layer in layers:
        x = layer(x)
    return x


def component_names(components: int) -> list[str]:
    """The names of the discovered concepts: ``nmf_0``, ``nmf_1``, ..."""
    return [f"nmf_{j}" for j in range(components)]


@torch.no_grad()
def nmf_presence(model: nn.Module, to_input: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                 components: int, seed: int, batch_size: int = 256) -> tuple[list[str], np.ndarray]:
    """(names, N x components): each factor's largest coefficient per image."""
    from sklearn.decomposition import NMF  # imported on use: scikit-learn takes seconds to import

    was = model.training
    model.eval()
    try:
        acts = torch.cat([conv_activations(model, to_input(images[i:i + batch_size])).float().cpu()
                          for i in range(0, len(images), batch_size)])
    finally:
        model.train(was)
    n, c, h, w = acts.shape
    rows = acts.permute(0, 2, 3, 1).reshape(-1, c).clamp_min(0).double().numpy()  # positions x channels
    rng = np.random.default_rng(stream_seed(seed, "concepts/nmf"))
    fit_rows = rows[rng.permutation(len(rows))[:FIT_POSITIONS]]
    if components > min(fit_rows.shape):  # scikit-learn's nndsvda init needs it (a traceback from deep inside)
        raise ConceptError(f"concept_nmf_components: {components} is more than the {c} channels of the layer "
                           f"factorised (or its {len(fit_rows)} positions): give at most {min(fit_rows.shape)}")
    nmf = NMF(n_components=components, init="nndsvda", max_iter=400, random_state=stream_seed(seed, "concepts/nmf"))
    nmf.fit(fit_rows)
    coeff = nmf.transform(rows).reshape(n, h * w, components)
    return component_names(components), coeff.max(axis=1)
