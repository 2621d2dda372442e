"""Concept inference + data poisoning (Chang, Zhu, Xu, Liu, Zhou; arXiv 2405.15662, 2024).

The method forgets a class by finding the concepts that define it and teaching the
model that samples carrying them belong elsewhere: the forget class's training rows are
relabelled (and optionally patched) toward a donor class, and the model is fine-tuned on
the remaining data plus those poisoned rows. Steps, as in the release
(ChangWenhan/Concept_Inference_Unlearn_official; ``concepts/`` holds one file per step):

1. a concept bank on the original model (``concept_bank``: ``cav`` pixel-scored
   concepts, ``nmf`` discovered ones, ``clip`` the paper's CLIP word embeddings);
2. the PCBM head on the concept margins of ``concept_examples`` training images;
3. the forget class's concepts ranked by PCBM weight (or Integrated Gradients);
4. the donor class (``confusion`` rule, ``shared`` fallback), or a hand-picked case's
   (``concept_poison_donor`` / ``concept_poison_concept`` / ``concept_poison_donor_concept``, as
   the release's revision experiments, ``concepts.donor.RELEASE_CASES``);
5. poisoning of the forget rows only (labels ``targeted`` / ``random`` / ``keep``, images
   ``none`` / ``localized`` / ``center`` / ``random`` / ``full``; where a concept sits found by
   pixel Integrated Gradients, or as the release does with CLIP windows, or by its ablation locators
   Grad-CAM and the PCBM-weighted window map, ``concept_poison_locate``);
6. fine-tuning with SGD (lr 1e-3, momentum 0.9, batch 32, no augmentation), only the last
   layer trainable in the release (``freeze_backbone`` in ``revision/run_unlearn.py``:
   only parameters named ``fc``), with the model in train mode as there.

With ``last`` on a model without batch statistics (the CNN), the classifier's inputs do
not change during fine-tuning, so they are computed once and the layer is trained on them:
the same computation as full forward passes, 20 epochs of MNIST in seconds. A model with
BatchNorm (ResNet) runs the full forward in train mode each step, as the release does, so
its running statistics move as they do there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from concepts import ConceptError
from concepts.attribution import peak_centres, pixel_attributions, rank_concepts
from concepts.bank import ConceptBank, embed_all, fit_cavs, model_embedder
from concepts.clip_bank import ClipEmbedder
from concepts.donor import choose_donor, shared_donor
from concepts.pcbm import PCBMHead, fit_pcbm
from concepts.poison import ConceptPaste, default_patch, poison_images, poison_labels, release_poison_images
from config import CLASS_LOCATORS, Config, ConfigError
from data.batches import batch_indices, num_batches
from data.rng import generator
from eval.concept_metrics import donor_absorption, forgetting_rate, fr_attack, shared_concept_retention
from models.runtime import eager
from unlearn.base import UnlearnTask, has_batch_statistics
from unlearn.search_space import Param, integer, log_float


def bank_names(cfg: Config) -> list[str]:
    """The concept names the bank ``cfg`` asks for will have, known before it is built."""
    if cfg.concept_bank == "clip":
        from concepts.words import concept_words
        return concept_words(cfg.dataset, cfg.concept_words)
    if cfg.concept_bank == "nmf":
        from concepts.nmf_concepts import component_names
        return component_names(cfg.concept_nmf_components)
    from concepts.pixel_concepts import CONCEPTS
    return list(CONCEPTS)


def named_concept(names: list[str], key: str, name: str, kind: str) -> int:
    """The index of concept ``name`` (the value of config key ``key``) in a ``kind`` bank; ConfigError if absent."""
    if name not in names:
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        hint = "; add it to a concept_words file" if kind == "clip" else ""
        raise ConfigError(f"{key}: {name!r} is not a concept of the {kind} bank ({shown}){hint}")
    return names.index(name)


def preflight(cfg: Config) -> None:
    """What would stop the method only after the original model's training (hours for the CIFAR presets),
    checked before it: the clip bank's package, words file and weights (``ConceptError``), and the concepts
    ``concept_poison_concept`` / ``concept_poison_donor_concept`` name (``ConfigError``); one line each."""
    names = bank_names(cfg)
    for key in ("concept_poison_concept", "concept_poison_donor_concept"):
        if getattr(cfg, key):
            named_concept(names, key, getattr(cfg, key), cfg.concept_bank)
    if cfg.concept_bank == "clip":
        from concepts.clip_bank import check_clip_bank
        check_clip_bank(cfg.dataset, cfg.concept_clip_model, cfg.concept_clip_pretrained, cfg.concept_words)


def build_bank(cfg: Config, original: nn.Module, task: UnlearnTask, rows: torch.Tensor) -> ConceptBank:
    """Step 1: the bank ``concept_bank`` names, built on the original model (frozen) and ``rows``."""
    data, seed = task.data, task.seed
    images = data.train.images[rows]
    if cfg.concept_bank == "clip":
        from concepts.clip_bank import build_clip_bank
        return build_clip_bank(cfg.dataset, cfg.concept_clip_model, cfg.concept_clip_pretrained, cfg.concept_words,
                               data.train.labels.device)
    embed = model_embedder(original, lambda x: data.inputs(x, train=False))
    if cfg.concept_bank == "cav":
        if images.shape[1] != 1:
            raise ConceptError("concept_bank=cav scores concepts from single-channel digit/clothing pixels; "
                               "use clip or nmf here")
        from concepts.pixel_concepts import concept_scores
        names, scores = concept_scores(images)
    elif cfg.concept_bank == "nmf":
        from concepts.nmf_concepts import nmf_presence
        names, scores = nmf_presence(original, lambda x: data.inputs(x, train=False), images,
                                     cfg.concept_nmf_components, seed)
    else:
        raise ConceptError(f"concept_bank {cfg.concept_bank!r} is not one of cav, nmf, clip")
    vectors, intercepts, accuracy = fit_cavs(names, scores, embed_all(embed, images), cfg.concept_quantile, seed)
    return ConceptBank(cfg.concept_bank, names, vectors, intercepts, embed, accuracy)


def fit_head(bank: ConceptBank, task: UnlearnTask, rows: torch.Tensor, num_classes: int, lam: float = 1e-5
             ) -> tuple[PCBMHead, torch.Tensor]:
    """Step 2: PCBM on three quarters of the example rows, scored on the rest; returns the head and all margins."""
    margins = bank.scores(task.data.train.images[rows])
    labels = task.data.train.labels[rows].cpu().numpy()
    cut = len(rows) * 3 // 4
    x = margins.double().numpy()
    head = fit_pcbm(x[:cut], labels[:cut], x[cut:], labels[cut:], num_classes, task.seed, lam)
    return head, margins


def half_per_class(rows: torch.Tensor, labels: torch.Tensor, seed: int) -> torch.Tensor:
    """The release's ``integrity=half`` (``revision/common.py`` ``select_indices``): a seeded half, rounded
    down, of each class's rows, the forget class's included."""
    g = generator(seed, "concept_poison/integrity")
    keep = []
    for c in torch.unique(labels[rows]).tolist():
        mine = rows[labels[rows] == c]
        keep.append(mine[torch.randperm(len(mine), generator=g)[:len(mine) // 2].to(mine.device)])
    return torch.sort(torch.cat(keep)).values


def release_pastes(weight: torch.Tensor, forget_class: int, concepts: list[int], donor: int, via: int,
                   train: Any, peaks_of: Callable[[int], Callable[[torch.Tensor], torch.Tensor]],
                   case_concept: int | None = None,
                   places_of: Callable[[int], Callable[[torch.Tensor], torch.Tensor]] | None = None
                   ) -> list[ConceptPaste]:
    """The top-M concepts' donors as ``revision/poison_gen_multi.py`` assigns them: the case's concept
    (``case_concept``; None: the first of ``concepts``, the top-ranked one, as a case the donor rule
    proposes names) keeps the chosen donor and its donor concept; every other concept goes to the class
    other than the forget class with the largest PCBM weight on it, cut where that same concept peaks.
    ``peaks_of(k)`` locates concept k on a donor image, ``places_of(k)`` (default: ``peaks_of``) on a forget one."""
    case_concept = concepts[0] if case_concept is None else case_concept
    places_of = places_of or peaks_of
    pastes = []
    for concept in concepts:
        cls, cut_at = (donor, via) if concept == case_concept else (shared_donor(weight, forget_class, concept),
                                                                     concept)
        pastes.append(ConceptPaste(train.images[train.labels == cls], peaks_of(cut_at), places_of(concept)))
    return pastes


def release_concepts(ranked: list[int], by_model: list[int], top_m: int) -> list[int]:
    """The concepts the release variant pastes over: one (M = 1, ``revision/poison_gen.py``) is the case's
    concept, first in ``ranked``; for M > 1 ``revision/poison_gen_multi.py`` takes the model's own top M
    (``by_model``), the case's concept among them only if the model ranks it there."""
    return ranked[:1] if top_m == 1 else by_model[:top_m]


def classifier_inputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the model's last layer receives for inputs ``x`` (one forward pass, in the current mode)."""
    seen: list[torch.Tensor] = []
    hook = model.classifier.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    try:
        with eager(model):  # a compiled graph would skip the hook
            model(x)
    finally:
        hook.remove()
    return seen[0]


def fine_tune(model: nn.Module, task: UnlearnTask, images: torch.Tensor, labels: torch.Tensor, cfg: Config
              ) -> list[float]:
    """Step 6: SGD over (images, labels), shuffled per epoch; returns the mean loss of each epoch."""
    data = task.data
    device = data.train.labels.device
    last = cfg.concept_poison_layers == "last"
    trainable = list(model.classifier.parameters()) if last else list(model.parameters())
    frozen = [p for p in model.parameters() if all(p is not q for q in trainable)]
    flags = [p.requires_grad for p in frozen]
    for p in frozen:
        p.requires_grad_(False)
    opt = torch.optim.SGD(trainable, lr=cfg.concept_poison_lr, momentum=cfg.concept_poison_momentum)
    model.train()
    exact_head = last and not has_batch_statistics(model)
    if exact_head:  # the classifier's inputs are fixed: compute them once
        with torch.no_grad():
            features = torch.cat([classifier_inputs(model, data.inputs(images[i:i + 1024], train=False))
                                  for i in range(0, len(images), 1024)])
    order = generator(task.seed, "concept_poison/order")
    steps = num_batches(len(labels), cfg.concept_poison_batch_size)
    epoch_loss = []
    try:
        for epoch in range(cfg.concept_poison_epochs):
            total = torch.zeros((), device=device)
            bar = tqdm(batch_indices(len(labels), cfg.concept_poison_batch_size, True, order, device), total=steps,
                       desc=f"concept_poison epoch {epoch + 1}/{cfg.concept_poison_epochs}", leave=False)
            for idx in bar:
                if exact_head:
                    logits = model.classifier(features[idx])
                elif last:  # BatchNorm: the full pass in train mode, as the release, with no backbone graph
                    with torch.no_grad():
                        inputs = classifier_inputs(model, data.inputs(images[idx], train=False))
                    logits = model.classifier(inputs)
                else:
                    logits = model(data.inputs(images[idx], train=False))[0]
                loss = F.cross_entropy(logits, labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach()
            epoch_loss.append(total / steps)
    finally:
        for p, flag in zip(frozen, flags, strict=True):
            p.requires_grad_(flag)
    return [float(v) for v in torch.stack(epoch_loss).cpu()] if epoch_loss else []


def unlearn(model: nn.Module, original: nn.Module, task: UnlearnTask, cfg: Config) -> dict[str, Any]:
    """Poison D_f toward a donor class found through concepts, then fine-tune ``model`` in place."""
    data, split, seed = task.data, task.split, task.seed
    train, device = data.train, data.train.labels.device
    c = cfg.forget_class
    n_examples = min(cfg.concept_examples, len(train))
    rows = torch.randperm(len(train), generator=generator(seed, "concept_poison/examples"))[:n_examples].to(device)
    bank = build_bank(cfg, original, task, rows)
    head, margins = fit_head(bank, task, rows, data.num_classes, cfg.concept_pcbm_lam)
    in_class = (train.labels[rows] == c).cpu()
    by_model = rank_concepts(head.linear, c, cfg.concept_poison_rank, margins[in_class], cfg.concept_poison_ig_steps)
    ranked, case_concept = by_model, None
    if cfg.concept_poison_concept:  # a hand-picked case's concept goes first
        case_concept = named_concept(bank.names, "concept_poison_concept", cfg.concept_poison_concept, bank.kind)
        ranked = [case_concept] + [j for j in by_model if j != case_concept]
    if cfg.concept_poison_donor >= 0:  # a hand-picked donor; its patch is cut at its own top concept unless named
        donor, rule, via = cfg.concept_poison_donor, "given", int(head.weight[cfg.concept_poison_donor].argmax())
    else:
        donor, rule, via = choose_donor(head.weight, c, ranked, cfg.concept_poison_top_k,
                                        cfg.concept_poison_donor_rule)
    if cfg.concept_poison_donor_concept:
        via = named_concept(bank.names, "concept_poison_donor_concept", cfg.concept_poison_donor_concept, bank.kind)
    top = ranked[:max(cfg.concept_poison_top_k, cfg.concept_poison_top_m)]

    forget = split.forget.unique().to(device)  # forget_repeat tiles D_f (CaMU's D_s); each row is poisoned once
    remain = split.remain.to(device)
    if cfg.concept_poison_integrity == "half":  # half of every class, then only the kept forget rows are poisoned
        kept = half_per_class(torch.cat([remain, forget]), train.labels, seed)
        in_forget = torch.isin(kept, forget)
        remain, forget = kept[~in_forget], kept[in_forget]
    new_labels = poison_labels(train.labels[forget], cfg.concept_poison_labels, donor, data.num_classes, seed)
    release = cfg.concept_poison_variant == "release"
    patch = cfg.concept_poison_patch or default_patch(train.images.shape[-1])
    # where a concept peaks: over the patch's window, or the release's 64/224 window whatever the patch
    locate = default_patch(train.images.shape[-1]) if release else patch

    # gradcam / pcbm_margin (the release's locator ablation) place the patch on the forget image only; the
    # donor's patch is cut where its concept peaks, as the release does with CLIP windows (ig without CLIP)
    by = cfg.concept_poison_locate
    cut_by = by if by not in CLASS_LOCATORS else "clip_window" if isinstance(bank.embed, ClipEmbedder) else "ig"

    def located(concept: int, how: str) -> Callable[[torch.Tensor], torch.Tensor]:
        if how == "gradcam":  # the forget class's evidence, whatever the concept
            from concepts.gradcam import gradcam_peaks
            return lambda images: gradcam_peaks(original, lambda x: data.inputs(x.to(device), train=False), images,
                                                c)
        if how.startswith("clip_window") or how == "pcbm_margin":  # the release's own 64/224 windows
            from concepts.clip_windows import window_peaks
            if not isinstance(bank.embed, ClipEmbedder):
                raise ConceptError(f"concept_poison_locate={how} needs the clip bank's CLIP image encoder")
            if how == "pcbm_margin":  # every concept's cosine, weighed by the forget class's PCBM weights
                return lambda images: window_peaks(bank.embed, bank.vectors, images, weights=head.weight[c].float())
            return lambda images: window_peaks(bank.embed, bank.vectors[concept], images,
                                               how == "clip_window_release")

        def centres(images: torch.Tensor) -> torch.Tensor:
            attr = pixel_attributions(lambda x: bank.concept_scores(x.to(device))[:, concept], images.to(device),
                                      cfg.concept_poison_ig_steps)
            return peak_centres(attr.cpu(), locate)
        return centres

    def peaks_of(concept: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """Where the donor's patch is cut at ``concept``."""
        return located(concept, cut_by)

    def places_of(concept: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """Where the patch for ``concept`` goes on a forget image."""
        return located(concept, by)

    # The donor's patch is cut where the concept the donor was chosen by peaks (the release's donor_concept):
    # under the confusion rule that is the donor's own top concept; under the shared fallback, not.
    donor_images = train.images[train.labels == donor]
    if release:
        new_images = release_poison_images(
            train.images[forget], donor_images, cfg.concept_poison_mode, seed,
            release_pastes(head.weight, c, release_concepts(ranked, by_model, cfg.concept_poison_top_m), donor, via,
                           train, peaks_of, case_concept, places_of)
            if cfg.concept_poison_mode == "localized" else None,
            cfg.concept_poison_patch)
    else:
        new_images = poison_images(
            train.images[forget], donor_images, cfg.concept_poison_mode, patch, seed,
            forget_peaks=lambda x: [places_of(j)(x) for j in ranked[:cfg.concept_poison_top_m]],
            donor_peak=peaks_of(via))
    new_images = new_images.to(device=device, dtype=train.images.dtype)

    images = torch.cat([train.images[remain], new_images])
    labels = torch.cat([train.labels[remain], new_labels.to(device)])
    losses = fine_tune(model, task, images, labels, cfg)
    return {
        "loss": losses,
        "concept_bank": bank.kind,
        "donor": donor,
        "donor_rule": rule,
        "donor_concept": bank.names[via],
        "top_concepts": [bank.names[j] for j in top],
        "top_concept_weights": [float(head.weight[c, j]) for j in top],
        "pcbm_accuracy": head.accuracy,
        "pcbm_sparsity": head.sparsity,
        "pcbm_top5_share": head.top5_share,
        "concept_val_accuracy": bank.val_accuracy,
        "relabelled_to_donor": float((new_labels == donor).double().mean()),
        "poisoned_rows": len(forget),
        "_state": {"bank": bank, "donor": donor, "top": ranked[:cfg.concept_poison_top_k]},
    }


def row_metrics(model: nn.Module, original: nn.Module, task: UnlearnTask, cfg: Config, state: dict[str, Any]
                ) -> dict[str, float]:
    """The method's row keys (eval/concept_metrics.py): Fr, donor absorption, shared-concept retention."""
    data, c = task.data, cfg.forget_class
    attack, attack_accuracy = fr_attack(original, data, c, task.seed)
    return {
        "fr": forgetting_rate(original, model, data, c, task.seed, attack),
        "fr_attack_accuracy": attack_accuracy,
        "donor_absorption": donor_absorption(model, data, c, state["donor"]),
        "shared_concept_retention": shared_concept_retention(model, data, state["bank"], state["top"], c,
                                                             cfg.concept_retention_quantile),
    }


# The release fixes lr 1e-3 and 20 / 30 epochs; the space spans a decade either side of the lr and
# 1-30 epochs, the two knobs its scripts expose (``--lr``, ``--epochs`` of revision/run_unlearn.py).
SEARCH_SPACE: dict[str, Param] = {
    "concept_poison_lr": log_float(1e-4, 1e-2),
    "concept_poison_epochs": integer(1, 30),
}

__all__ = ["SEARCH_SPACE", "bank_names", "build_bank", "fine_tune", "preflight", "row_metrics", "unlearn"]
