"""Concept-level class unlearning (Chang et al., arXiv 2405.15662), in the order it runs.

1. ``bank``        concept vectors and the margin of an embedding to each of them; built
                   from ``pixel_concepts`` (cav), ``nmf_concepts`` (nmf) or ``clip_bank`` (clip)
2. ``pcbm``        the post-hoc concept bottleneck head: a sparse linear classifier on margins
3. ``attribution`` Integrated Gradients: concepts -> class (ranking), pixels -> concept (patches);
   ``clip_windows``  or, for the clip bank, the release's CLIP windows: where a concept sits
4. ``donor``       which class absorbs the forgotten one
5. ``poison``      relabel (and optionally patch) the forget class's training rows
The fine-tuning itself and the run's bookkeeping are ``unlearn/concept_poison.py``; the
method's own metrics are ``eval/concept_metrics.py``. docs/concepts.md explains each step.
"""


class ConceptError(RuntimeError):
    """The concept method cannot run here (a missing package, weights or words file, a concept the bank
    lacks); one line says what."""
