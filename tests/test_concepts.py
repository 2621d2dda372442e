"""Concept inference + data poisoning (unlearn/concept_poison.py, concepts/): each step, then a run that forgets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import main
from concepts import ConceptError
from concepts.attribution import (
    bilinear_backward_allowed,
    concept_attributions,
    peak_centres,
    pixel_attributions,
    rank_concepts,
)
from concepts.donor import choose_donor
from concepts.pixel_concepts import CONCEPTS, concept_scores
from concepts.poison import (
    ConceptPaste,
    default_patch,
    poison_images,
    poison_labels,
    release_poison_images,
    release_size,
)
from config import Config, validate
from eval.accuracy import accuracy
from eval.concept_metrics import forgetting_rate
from eval.predict import predict
from main import split_for_seed
from models.original import original_model
from unlearn import METHODS, ROW_METRICS, SEARCH_SPACES
from unlearn import concept_poison as cp
from unlearn.base import UnlearnTask

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(data_root, tmp_path_factory):
    """A 2-epoch original on 3000 MNIST rows, class 0's split, and the bank + PCBM head on it."""
    torch.set_num_threads(2)
    cfg = validate(Config(data_root=str(data_root), download=False, train_limit=3000, test_limit=1000,
                          train_epochs=2, seeds=[0], num_threads=2, method="concept_poison",
                          out_dir=str(tmp_path_factory.mktemp("concepts")), concept_examples=2000,
                          concept_poison_ig_steps=4))  # 4 steps locate a patch as well here, in a quarter of the time
    from data import load_dataset
    data = load_dataset("mnist", data_root, download=False, device="cpu", train_limit=3000, test_limit=1000)
    original, _ = original_model(cfg, data)
    split = split_for_seed(cfg, data.train.labels, 0)
    task = UnlearnTask(data, split, 0)
    rows = torch.randperm(3000, generator=torch.Generator().manual_seed(1))[:2000]
    bank = cp.build_bank(cfg, original, task, rows)
    head, margins = cp.fit_head(bank, task, rows, 10)
    return {"cfg": cfg, "data": data, "original": original, "split": split, "task": task, "rows": rows,
            "bank": bank, "head": head, "margins": margins}


def accuracies(model, setup) -> dict[str, float]:
    """The paper's A_train / A_test / A_global (forget_acc, test_forget_acc, test_remain_acc), in %."""
    data, split = setup["data"], setup["split"]
    def acc(images, labels):
        return accuracy(predict(model, data, images), labels)
    f_test = data.test.labels == 0
    return {"forget_acc": acc(data.train.images[split.forget], data.train.labels[split.forget]),
            "test_forget_acc": acc(data.test.images[f_test], data.test.labels[f_test]),
            "test_remain_acc": acc(data.test.images[~f_test], data.test.labels[~f_test])}


def run_method(setup, **keys):
    """A copy of the original unlearned with ``keys`` over the fixture's config; returns (model, traces)."""
    cfg = validate(Config(**{**setup["cfg"].__dict__, **keys}))
    model = type(setup["original"])()
    model.load_state_dict(setup["original"].state_dict())
    traces = METHODS["concept_poison"](model, setup["original"], setup["task"], cfg)
    return model, traces, cfg


# ---- pixel concepts -------------------------------------------------------------------------------------------

def test_pixel_concepts_score_hand_drawn_shapes():
    ring = torch.zeros(1, 1, 28, 28)
    ring[0, 0, 6:22, 6:22] = 1.0
    ring[0, 0, 9:19, 9:19] = 0.0  # a square ring: one hole
    bar = torch.zeros(1, 1, 28, 28)
    bar[0, 0, 4:24, 13:15] = 1.0  # a vertical bar: no hole, tall
    names, scores = concept_scores(torch.cat([ring, bar]))
    assert names == list(CONCEPTS) and scores.shape == (2, len(CONCEPTS)) and np.isfinite(scores).all()
    s = dict(zip(names, scores.T, strict=True))
    assert s["loops"].tolist() == [1.0, 0.0]
    assert s["tall"][1] > 5 > s["tall"][0]
    assert s["stroke_vertical"][1] > s["stroke_horizontal"][1]
    assert s["symmetry_left_right"][0] == 0.0  # perfectly mirror-symmetric: the largest score
    corner = torch.zeros(1, 1, 28, 28)
    corner[0, 0, 4:24, 4:8] = 1.0
    assert concept_scores(corner)[1][0, names.index("symmetry_left_right")] < -0.05


# ---- step 1-2: bank and PCBM ------------------------------------------------------------------------------------

def test_most_cavs_separate_their_examples(setup):
    acc = setup["bank"].val_accuracy
    assert set(acc) == set(CONCEPTS)
    assert sum(a > 0.7 for a in acc.values()) >= 0.8 * len(acc), acc


def test_margin_is_the_signed_distance_to_the_cav_hyperplane(setup):
    bank = setup["bank"]
    emb = torch.randn(5, bank.vectors.shape[1])
    v, b = bank.vectors[3], bank.intercepts[3]
    expected = (emb @ v + b) / v.norm()
    assert torch.allclose(bank.margins(emb)[:, 3], expected, atol=1e-5)


def test_pcbm_head_beats_chance_and_l1_makes_it_sparse(setup):
    head = setup["head"]
    assert head.accuracy > 60.0  # chance is 10 %
    assert head.top5_share > 1.5 * 5 / len(CONCEPTS)  # a class leans on few concepts (uniform: 5/17)
    x = setup["margins"].double().numpy()
    y = setup["data"].train.labels[setup["rows"]].numpy()
    strong = cp.fit_pcbm(x[:1500], y[:1500], x[1500:], y[1500:], 10, 0, lam=1e-2)
    assert strong.sparsity > 0.4 and strong.accuracy > 60.0
    assert strong.sparsity > head.sparsity


# ---- step 3: attribution ----------------------------------------------------------------------------------------

def test_integrated_gradients_on_the_linear_head_is_exact(setup):
    head = setup["head"].linear
    x = setup["margins"][:20].float()
    attr = concept_attributions(head, x, target=0, steps=8)
    completeness = head(x)[:, 0] - head(torch.zeros_like(x))[:, 0]
    assert torch.allclose(attr.sum(1), completeness, atol=1e-4)
    assert torch.allclose(attr, head.weight[0] * x, atol=1e-4)


def test_ranking_by_weight_and_by_ig(setup):
    head = setup["head"].linear
    by_weight = rank_concepts(head, 0, "weight")
    assert by_weight[0] == int(head.weight[0].argmax()) and sorted(by_weight) == list(range(len(CONCEPTS)))
    margins = torch.rand(30, len(CONCEPTS)) + 1
    by_ig = rank_concepts(head, 0, "ig", margins, steps=4)
    assert by_ig[0] == int((head.weight[0] * margins.mean(0)).argmax())


def test_pixel_ig_is_exact_on_a_linear_score_and_halves_its_chunks_when_out_of_memory():
    weight = torch.randn(1, 6, 6)
    images = torch.rand(10, 1, 6, 6)
    batches = []

    def score(x: torch.Tensor) -> torch.Tensor:
        batches.append(len(x))
        if len(x) > 3 * 4:  # more than 3 images of 4 steps: "out of memory"
            raise torch.OutOfMemoryError("CUDA out of memory")
        return (x * weight).flatten(1).sum(1)

    attr = pixel_attributions(score, images, steps=4, batch_size=8)
    assert attr.shape == images.shape
    assert torch.allclose(attr, weight * images, atol=1e-5)  # IG of a linear score: weight x (input - 0)
    assert batches == [32, 16] + [8] * 5  # 8 images (x 4 steps) -> 4 -> 2, then on at 2 per chunk

    def never_fits(x: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.OutOfMemoryError):  # not even one image: the error stands
        pixel_attributions(never_fits, images)


def test_peak_centre_finds_the_hot_window():
    attr = torch.zeros(2, 1, 28, 28)
    attr[0, 0, 3:6, 20:23] = 1.0
    attr[1, 0, 25, 25] = 1.0
    assert peak_centres(attr, 3).tolist()[0] == [4, 21]
    assert peak_centres(attr, 3).tolist()[1][0] >= 24


# ---- step 4: donor ----------------------------------------------------------------------------------------------

def test_deterministic_mode_allows_the_bilinear_backward_on_cuda_only():
    """torch has no deterministic CUDA kernel for the resize's backward that pixel IG goes through."""
    torch.use_deterministic_algorithms(True)
    try:
        with bilinear_backward_allowed("cpu"):
            assert not torch.is_deterministic_algorithms_warn_only_enabled()
        with bilinear_backward_allowed("cuda"):  # decided from the device alone: nothing runs on it
            assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    with bilinear_backward_allowed("cuda"):  # not deterministic: left as it is
        assert not torch.are_deterministic_algorithms_enabled()


def test_donor_rules_on_a_hand_made_head():
    w = torch.tensor([[5.0, 4.0, 0.0],   # class 0: top concepts 0, 1
                      [3.0, 0.0, 1.0],   # class 1: weighs concept 0 most after class 0, its own top-1 is 0
                      [0.0, 3.5, 4.0]])  # class 2: own top-1 is concept 2
    assert choose_donor(w, 0, [0, 1, 2], 5, "confusion") == (1, "confusion", 0)
    w[1] = torch.tensor([3.0, 0.0, 9.0])  # class 1's own top-1 moves to concept 2: no confusion on concept 0 or 1
    assert choose_donor(w, 0, [0, 1, 2], 2, "confusion") == (1, "shared", 0)
    assert choose_donor(w, 0, [0, 1, 2], 5, "shared") == (1, "shared", 0)


def test_donor_differs_from_the_forget_class_and_is_fixed_by_the_seed(setup):
    _, a, _ = run_method(setup, concept_poison_epochs=1)
    _, b, _ = run_method(setup, concept_poison_epochs=1)
    assert a["donor"] != 0 and a["donor"] == b["donor"] and a["top_concepts"] == b["top_concepts"]
    assert len(a["top_concepts"]) == 5 and all(n in CONCEPTS for n in a["top_concepts"])


# ---- step 5: poisoning ------------------------------------------------------------------------------------------

def test_label_rules():
    true = torch.full((20000,), 3)
    assert poison_labels(true, "targeted", 7, 10, 0).eq(7).all()
    assert poison_labels(true, "keep", 7, 10, 0).equal(true)
    rand = poison_labels(true, "random", 7, 10, 0)
    assert abs(float((rand == 3).double().mean()) - 0.1) < 0.01  # the true class too, about 1/C
    assert set(rand.tolist()) == set(range(10))
    assert rand.equal(poison_labels(true, "random", 7, 10, 0))
    assert not rand.equal(poison_labels(true, "random", 7, 10, 1))


def test_image_modes_change_only_patches():
    forget = torch.zeros(6, 1, 28, 28)
    donors = torch.ones(4, 1, 28, 28) * torch.arange(1, 5).view(4, 1, 1, 1)
    patch = default_patch(28)
    assert patch == 8
    peak = lambda x: torch.full((len(x), 2), 10)  # noqa: E731
    assert poison_images(forget, donors, "none", patch, 0).equal(forget)
    full = poison_images(forget, donors, "full", patch, 0)
    assert all(any(img.equal(d) for d in donors) for img in full)
    for mode in ("localized", "center", "random"):
        out = poison_images(forget, donors, mode, patch, 0, forget_peaks=lambda x: [peak(x)], donor_peak=peak)
        changed = (out != forget).flatten(1).sum(1)
        assert changed.eq(patch * patch).all(), mode  # one donor patch per image, nothing else
    loc = poison_images(forget, donors, "localized", patch, 0, forget_peaks=lambda x: [peak(x)], donor_peak=peak)
    assert (loc[:, :, 6:14, 6:14] != 0).all()  # centred on the peak (10, 10)
    two = poison_images(forget, donors, "localized", patch, 0, donor_peak=peak,
                        forget_peaks=lambda x: [peak(x), torch.full((len(x), 2), 22)])
    assert (two != forget).flatten(1).sum(1).eq(2 * patch * patch).all()  # top-M = 2: two patches


def test_release_geometry_of_center_random_and_full():
    """revision/poison_gen.py on 224 px: a 96 px crop of the donor's centre, pasted at the centre or at a
    centre a half patch inside the edges; the donor resized to 160 px over the centre. Scaled to 28 px: 12, 20."""
    assert (release_size(28, "center"), release_size(28, "random"), release_size(28, "full")) == (12, 12, 20)
    forget = torch.zeros(200, 1, 28, 28)
    ramp = torch.arange(28 * 28, dtype=torch.float32).view(1, 1, 28, 28) / 1000
    donors = ramp + torch.arange(1, 4).view(3, 1, 1, 1)  # every pixel of every donor differs
    centre = release_poison_images(forget, donors, "center", 0)
    assert centre[:, :, 8:20, 8:20].ne(0).all() and (centre != 0).flatten(1).sum(1).eq(144).all()
    assert all(any(img[:, 8:20, 8:20].equal(d[:, 8:20, 8:20]) for d in donors) for img in centre)
    rand = release_poison_images(forget, donors, "random", 0)
    assert (rand != 0).flatten(1).sum(1).eq(144).all()
    tops = torch.stack([torch.nonzero(img[0])[0] for img in rand])  # each patch's top-left corner
    assert tops.amin(0).tolist() == [0, 0] and tops.amax(0).tolist() == [16, 16]  # centres 6..22, both axes
    # drawn inside, not anywhere then clamped (that puts about two thirds of the corners on an edge)
    assert torch.isin(tops, torch.tensor([0, 16])).float().mean() < 0.25
    for img, (top, left) in zip(rand, tops.tolist(), strict=True):
        assert any(img[:, top:top + 12, left:left + 12].equal(d[:, 8:20, 8:20]) for d in donors)
    full = release_poison_images(forget, donors, "full", 0)
    resized = torch.nn.functional.interpolate(donors, size=(20, 20), mode="bilinear", align_corners=False)
    assert (full != 0).flatten(1).sum(1).eq(400).all()  # the border stays
    assert all(any(img[:, 4:24, 4:24].equal(r) for r in resized) for img in full)  # resized, not cropped
    assert release_poison_images(forget, donors, "center", 0, patch=6).ne(0).flatten(1).sum(1).eq(36).all()
    assert release_poison_images(forget, donors, "random", 0).equal(rand)  # seeded
    assert not release_poison_images(forget, donors, "random", 1).equal(rand)


def test_release_top_m_finds_each_peak_again_on_the_patched_image():
    """revision/poison_gen_multi.py: a donor per concept, and concept k's peak located after patches 1..k-1."""
    forget = torch.zeros(5, 1, 28, 28)
    forget[:, :, 2, 2] = 0.5  # the brightest pixel of the clean image
    def brightest(x):  # a concept that peaks at the brightest pixel
        flat = x.sum(1).flatten(1).argmax(1)
        return torch.stack([flat // 28, flat % 28], 1)
    fixed = lambda x: torch.full((len(x), 2), 14)  # noqa: E731
    ones, twos = torch.ones(3, 1, 28, 28), torch.full((3, 1, 28, 28), 2.0)
    ones[:, :, 14, 14] = 1.5  # patch 1 carries the new brightest pixel, at its centre
    out = release_poison_images(forget, ones, "localized", 0,
                                [ConceptPaste(ones, fixed, fixed), ConceptPaste(twos, fixed, brightest)])
    assert out[:, :, 10:18, 10:18].eq(2).all()  # concept 2 peaks inside patch 1 now, and covers it
    assert (out != forget).flatten(1).sum(1).eq(64).all()
    once = poison_images(forget, ones, "localized", 8, 0, forget_peaks=lambda x: [fixed(x), brightest(x)],
                         donor_peak=fixed)  # simple: both peaks found on the clean image
    assert once[:, :, 10:18, 10:18].ge(1).all() and once[:, :, 0:8, 0:8].ge(1).all()  # two patches
    one = release_poison_images(forget, ones, "localized", 0, [ConceptPaste(ones, fixed, brightest)])
    assert one.equal(poison_images(forget, ones, "localized", 8, 0, forget_peaks=lambda x: [brightest(x)],
                                   donor_peak=fixed))  # one concept: the two variants agree
    ramp = torch.arange(28 * 28, dtype=torch.float32).view(1, 1, 28, 28).expand(3, 1, 28, 28) / 1000
    small = release_poison_images(forget, ramp, "localized", 0, [ConceptPaste(ramp, fixed, fixed)], patch=4)
    cut = torch.nn.functional.interpolate(ramp[:1, :, 10:18, 10:18], size=(4, 4), mode="bilinear",
                                          align_corners=False)  # cut with the 8 px window, then resized
    assert small[:, :, 12:16, 12:16].eq(cut).all() and (small != forget).flatten(1).sum(1).eq(16).all()
    many = torch.arange(1, 51, dtype=torch.float32).view(50, 1, 1, 1).expand(50, 1, 28, 28)
    corner = lambda x: torch.full((len(x), 2), 4)  # noqa: E731
    two = release_poison_images(torch.zeros(20, 1, 28, 28), many, "localized", 0,
                                [ConceptPaste(many, fixed, fixed), ConceptPaste(many, fixed, corner)])
    assert two[:, 0, 14, 14].ne(two[:, 0, 4, 4]).float().mean() > 0.5  # a fresh donor image per concept


def test_release_pastes_give_each_concept_its_owner_class():
    weight = torch.tensor([[5.0, 4.0, 3.0], [1.0, 0.0, 9.0], [4.0, 0.5, 0.0], [0.0, 3.0, 1.0]])
    labels = torch.arange(4).repeat(2)
    train = type("T", (), {"images": labels.float().view(8, 1, 1, 1).expand(8, 1, 4, 4), "labels": labels})()
    pastes = cp.release_pastes(weight, 0, [0, 1, 2], donor=1, via=2, train=train, peaks_of=lambda j: j)
    assert [int(p.donors[0, 0, 0, 0]) for p in pastes] == [1, 3, 1]  # kept donor, then each concept's owner
    assert [(p.donor_peak, p.forget_peak) for p in pastes] == [(2, 0), (1, 1), (2, 2)]
    # a hand-picked case's concept (here 1, second in the model's order) gets the case's donor wherever it ranks
    case = cp.release_pastes(weight, 0, [0, 1, 2], donor=2, via=0, train=train, peaks_of=lambda j: j, case_concept=1)
    assert [int(p.donors[0, 0, 0, 0]) for p in case] == [2, 2, 1] and case[1].donor_peak == 0
    assert [(p.donor_peak, p.forget_peak) for p in case] == [(0, 0), (0, 1), (2, 2)]
    # which concepts: M = 1 is the case's own (poison_gen.py), M > 1 the model's top M (poison_gen_multi.py)
    assert cp.release_concepts([5, 1, 2, 3], [1, 2, 3, 5], 1) == [5]
    assert cp.release_concepts([5, 1, 2, 3], [1, 2, 3, 5], 3) == [1, 2, 3]


@pytest.mark.parametrize("mode", ["center", "localized"])
def test_release_variant_through_the_method(setup, monkeypatch, mode):
    seen = {}

    def keep_images(model, task, images, labels, cfg):
        seen[cfg.concept_poison_variant] = images
        return []

    monkeypatch.setattr(cp, "fine_tune", keep_images)
    _, traces, _ = run_method(setup, concept_poison_mode=mode, concept_poison_variant="release")
    run_method(setup, concept_poison_mode=mode, concept_poison_variant="simple")
    n_r = len(setup["split"].remain)
    clean = setup["data"].train.images[setup["split"].forget]
    release, simple = seen["release"][n_r:], seen["simple"][n_r:]
    if mode == "localized":  # one concept: the variants agree
        assert release.equal(simple)
    else:  # the donor's 12 px centre at the centre, nothing outside it
        outside = torch.ones(28, 28, dtype=torch.bool)
        outside[8:20, 8:20] = False
        assert release[:, :, outside].equal(clean[:, :, outside]) and not release.equal(simple)
        train = setup["data"].train
        centres = train.images[train.labels == traces["donor"]][:, :, 8:20, 8:20].flatten(1)
        assert (release[:, :, 8:20, 8:20].flatten(1)[:, None] == centres[None]).all(2).any(1).all()


@pytest.mark.parametrize("mode", ["none", "localized"])
def test_only_forget_rows_are_poisoned(setup, monkeypatch, mode):
    seen = {}
    monkeypatch.setattr(cp, "fine_tune", lambda model, task, images, labels, cfg: seen.update(x=images, y=labels) or [])
    _, traces, _ = run_method(setup, concept_poison_mode=mode)
    data, split = setup["data"], setup["split"]
    n_r = len(split.remain)
    assert len(seen["y"]) == n_r + len(split.forget)
    assert seen["x"][:n_r].equal(data.train.images[split.remain])
    assert seen["y"][:n_r].equal(data.train.labels[split.remain])
    assert seen["y"][n_r:].eq(traces["donor"]).all()  # targeted: every forget row now says donor
    poisoned = seen["x"][n_r:]
    clean = data.train.images[split.forget]
    if mode == "none":
        assert poisoned.equal(clean)
    else:
        changed = (poisoned != clean).flatten(1).sum(1)
        assert changed.max() <= 64 and changed.float().mean() > 10


class Quadrants(torch.nn.Module):
    """A stand-in CLIP image encoder: the mean intensity of each quadrant (CLIP's normalisation undone), and 0.1."""

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        from concepts.clip_bank import CLIP_MEAN, CLIP_STD
        unit = x * torch.tensor(CLIP_STD).view(1, 3, 1, 1) + torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        h, w = unit.shape[-2] // 2, unit.shape[-1] // 2
        quads = [unit[..., :h, :w], unit[..., :h, w:], unit[..., h:, :w], unit[..., h:, w:]]
        return torch.stack([q.mean(dim=(1, 2, 3)) for q in quads] + [torch.full((len(x),), 0.1)], dim=1)


@pytest.mark.parametrize("variant, mode, locate, case", [("simple", "localized", "clip_window", False),
                                                         ("release", "localized", "clip_window_release", False),
                                                         ("simple", "center", "clip_window", False),
                                                         ("simple", "localized", "clip_window", True)])
def test_clip_window_locator_through_the_method(setup, monkeypatch, variant, mode, locate, case):
    """concept_poison_locate=clip_window(_release): the donor's patch is cut where the CLIP windows put the donor
    concept and (localized) lands where they put the top concept (the stand-in bank's concepts are 'ink in
    quadrant q'); center pastes at the centre. Nothing outside the pasted window changes."""
    from concepts import clip_windows
    from concepts.bank import ConceptBank
    from concepts.clip_bank import ClipEmbedder
    from concepts.poison import _window

    embed = ClipEmbedder(Quadrants(), (16, 16), 1.0, torch.device("cpu"))
    bank = ConceptBank("clip", ["ink top-left", "ink top-right", "ink bottom-left", "ink bottom-right"],
                       torch.eye(4, 5), torch.zeros(4), embed)
    monkeypatch.setattr(cp, "build_bank", lambda cfg, original, task, rows: bank)
    calls, seen = [], {}
    real = clip_windows.window_peaks
    def spy(e, v, x, released):
        calls.append((e, v.tolist(), len(x), released))
        return real(e, v, x, released)

    monkeypatch.setattr(clip_windows, "window_peaks", spy)
    monkeypatch.setattr(cp, "fine_tune", lambda model, task, images, labels, cfg: seen.update(x=images) or [])
    picked = {"concept_poison_donor": 5, "concept_poison_concept": "ink top-right",
              "concept_poison_donor_concept": "ink bottom-left"} if case else {}
    _, traces, _ = run_method(setup, concept_bank="clip", concept_poison_mode=mode, concept_poison_locate=locate,
                              concept_poison_variant=variant, **picked)
    if case:  # the hand-picked concepts are the ones located
        assert (traces["top_concepts"][0], traces["donor_concept"]) == ("ink top-right", "ink bottom-left")
    split = setup["split"]
    clean = setup["data"].train.images[split.forget]
    released = locate == "clip_window_release"
    top = bank.vectors[bank.names.index(traces["top_concepts"][0])]
    donor_call = (embed, bank.vectors[bank.names.index(traces["donor_concept"])].tolist(), len(clean), released)
    assert calls == [donor_call] + ([(embed, top.tolist(), len(clean), released)] if mode == "localized" else [])
    middle = torch.tensor([[14, 14]]).expand(len(clean), 2)
    centres = real(embed, top, clean, released) if mode == "localized" else middle
    rows, cols = _window(centres, 8, 28, 28)
    poisoned = seen["x"][len(split.remain):]
    inside = torch.zeros_like(clean, dtype=torch.bool)
    for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
        inside[i, :, r:r + 8, c:c + 8] = True
    assert poisoned[~inside].equal(clean[~inside])
    assert (poisoned != clean).flatten(1).any(1).float().mean() > 0.9  # nearly every row got its patch


def test_a_hand_picked_case_sets_the_donor_and_the_concepts(setup, monkeypatch):
    """As the release's revision cases: the donor, the forget concept (first in line) and the donor concept given;
    a donor alone is cut at its own top concept by the method's PCBM head."""
    seen, heads = {}, []
    real_fit = cp.fit_head
    monkeypatch.setattr(cp, "fit_head", lambda *a, **k: heads.append(real_fit(*a, **k)) or heads[-1])
    monkeypatch.setattr(cp, "fine_tune", lambda model, task, images, labels, cfg: seen.update(y=labels) or [])
    names = setup["bank"].names
    _, traces, _ = run_method(setup, concept_poison_donor=3, concept_poison_concept=names[2],
                              concept_poison_donor_concept=names[5], concept_poison_mode="center")
    assert (traces["donor"], traces["donor_rule"], traces["donor_concept"]) == (3, "given", names[5])
    assert traces["top_concepts"][0] == names[2] and len(set(traces["top_concepts"])) == 5
    assert seen["y"][len(setup["split"].remain):].eq(3).all()
    _, alone, _ = run_method(setup, concept_poison_donor=7)
    head = heads[-1][0]
    assert (alone["donor"], alone["donor_rule"]) == (7, "given")
    assert alone["donor_concept"] == names[int(head.weight[7].argmax())]
    assert alone["top_concepts"] == [names[j] for j in rank_concepts(head.linear, 0, "weight")[:5]]
    monkeypatch.setattr(cp, "fine_tune", lambda model, task, images, labels, cfg: seen.update(x=images) or [])
    run_method(setup, concept_poison_donor=3, concept_poison_concept=names[2], concept_poison_mode="localized",
               concept_poison_variant="release", concept_poison_top_m=2)  # poison_gen_multi's rule for the case
    clean = setup["data"].train.images[setup["split"].forget]
    assert seen["x"][len(setup["split"].remain):].ne(clean).flatten(1).any(1).float().mean() > 0.9


def test_the_release_cases_are_expressible_with_the_built_in_words():
    from concepts.clip_bank import WORDS
    from concepts.donor import RELEASE_CASES
    from config import parse_args

    assert len(RELEASE_CASES) == 10
    for (dataset, forget), case in RELEASE_CASES.items():
        assert {case.concept, case.donor_concept} <= set(WORDS[dataset]), case
        cfg = parse_args([f"configs/{dataset}_concept.yaml", f"--forget_class={forget}",
                          f"--concept_poison_donor={case.donor}", f"--concept_poison_concept={case.concept}",
                          f"--concept_poison_donor_concept={case.donor_concept}", "--concept_poison_mode=localized",
                          "--concept_poison_locate=clip_window_release"])
        assert cfg.concept_poison_donor == case.donor != forget


@pytest.mark.parametrize("keys, says", [
    (["--concept_poison_concept=antler"], "concept_poison_concept: 'antler' is not a concept of the cav bank (loops, "),
    (["--concept_bank=nmf", "--concept_poison_donor_concept=nmf_12", "--concept_poison_mode=localized"],
     "concept_poison_donor_concept: 'nmf_12' is not a concept of the nmf bank (nmf_0, "),
])
def test_a_concept_the_bank_lacks_stops_before_training(data_root, tmp_path, capsys, keys, says):
    out = tmp_path / "out"
    assert main.main(["--method=concept_poison", *keys, f"--data_root={data_root}", "--train_limit=500",
                      "--test_limit=200", "--seeds=0", f"--out_dir={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"config error: {says}") and "\n" not in err and not out.exists()


def test_a_tiled_forget_set_is_poisoned_once_per_row(setup, monkeypatch):
    """forget_repeat tiles D_f (CaMU's D_s draws that many partners); each forget row was poisoned that often."""
    from data.splits import Split

    seen = {}
    monkeypatch.setattr(cp, "fine_tune", lambda model, task, images, labels, cfg: seen.update(y=labels) or [])
    split = setup["split"]
    tiled = UnlearnTask(setup["data"], Split(forget=split.forget.repeat(3), remain=split.remain,
                                             sample=split.sample), 0)
    traces = METHODS["concept_poison"](type(setup["original"])(), setup["original"], tiled, setup["cfg"])
    assert traces["poisoned_rows"] == len(split.forget) and len(seen["y"]) == len(split.remain) + len(split.forget)


def test_half_integrity_halves_every_class_the_forget_class_too(setup, monkeypatch):
    """As the release's select_indices: half of each class, rounded down, and only the kept forget rows poisoned
    (it halved D_r alone, rounding up, and poisoned all of D_f: twice the release's share of poisoned rows)."""
    seen = {}
    monkeypatch.setattr(cp, "fine_tune", lambda model, task, images, labels, cfg: seen.update(y=labels) or [])
    _, traces, _ = run_method(setup, concept_poison_integrity="half")
    labels, split = setup["data"].train.labels, setup["split"]
    assert traces["poisoned_rows"] == len(split.forget) // 2
    per_class = torch.bincount(labels[split.remain], minlength=10) // 2
    assert len(seen["y"]) == int(per_class.sum()) + len(split.forget) // 2
    assert seen["y"][int(per_class.sum()):].eq(traces["donor"]).all()


# ---- step 6 and the whole method --------------------------------------------------------------------------------

def test_last_layer_only_leaves_every_other_parameter_bitwise(setup):
    model, _, _ = run_method(setup, concept_poison_epochs=2)
    before = dict(setup["original"].named_parameters())
    head = {id(p) for p in model.classifier.parameters()}
    for name, p in model.named_parameters():
        if id(p) in head:
            assert not torch.equal(p, before[name]), name
        else:
            assert torch.equal(p, before[name]), name
        assert p.requires_grad, name  # restored after fine-tuning


def test_all_layers_moves_the_backbone(setup):
    model, _, _ = run_method(setup, concept_poison_epochs=1, concept_poison_layers="all", concept_examples=600)
    assert not torch.equal(model.embed.weight, setup["original"].embed.weight)


def test_targeted_poisoning_forgets_and_keeps_the_rest(setup):
    data, cfg = setup["data"], setup["cfg"]
    before = accuracies(setup["original"], setup)
    model, traces, _ = run_method(setup)
    after = accuracies(model, setup)
    assert after["forget_acc"] <= 5.0 and after["test_forget_acc"] <= 5.0, after
    assert after["test_remain_acc"] >= before["test_remain_acc"] - 2.0, (before, after)
    row = ROW_METRICS["concept_poison"](model, setup["original"], setup["task"], cfg, traces["_state"])
    assert row["donor_absorption"] > 90.0
    assert 0.4 <= row["fr_attack_accuracy"] <= 1.0
    assert 0.0 <= row["shared_concept_retention"] <= 100.0
    fr_original = forgetting_rate(setup["original"], setup["original"], data, 0, 0)
    assert row["fr"] >= fr_original


def test_a_diverged_models_fr_is_nan_not_an_error(setup):
    """The transferred attack's scaler refused NaN features: a diverged run ended in a traceback."""
    import copy

    class Attack:
        def predict(self, x):
            return np.zeros(len(x))

    model = copy.deepcopy(setup["original"])
    assert forgetting_rate(setup["original"], model, setup["data"], 0, 0, attack=Attack()) == 1.0
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    assert np.isnan(forgetting_rate(setup["original"], model, setup["data"], 0, 0, attack=Attack()))


def test_keep_labels_never_forget(setup):
    model, _, _ = run_method(setup, concept_poison_labels="keep")
    after = accuracies(model, setup)
    assert after["forget_acc"] > 90.0


def test_nmf_bank_discovers_concepts(setup):
    cfg = validate(Config(**{**setup["cfg"].__dict__, "concept_bank": "nmf", "concept_nmf_components": 6}))
    bank = cp.build_bank(cfg, setup["original"], setup["task"], setup["rows"][:1000])
    assert bank.names == [f"nmf_{j}" for j in range(6)] and bank.vectors.shape == (6, 256)
    assert sum(a > 0.7 for a in bank.val_accuracy.values()) >= 4, bank.val_accuracy
    many = validate(Config(**{**cfg.__dict__, "concept_nmf_components": 300}))  # scikit-learn raised from its init
    with pytest.raises(ConceptError, match="concept_nmf_components: 300 is more than the 32 channels"):
        cp.build_bank(many, setup["original"], setup["task"], setup["rows"][:200])


def test_registered_with_a_search_space():
    assert "concept_poison" in METHODS and set(SEARCH_SPACES["concept_poison"]) <= set(Config.__dataclass_fields__)


@pytest.mark.parametrize("args, message", [
    (["--method=concept_poison", "--scenario=random"], "scenario=class"),
    (["--method=concept_poison", "--dataset=cifar10"], "use clip"),
    (["--method=concept_poison", "--concept_poison_labels=flip"], "targeted, random, keep"),
    (["--method=concept_poison", "--concept_poison_patch=40"], "concept_poison_patch: 40 must lie in [0, 28]"),
    (["--method=concept_poison", "--concept_poison_donor=0"],
     "concept_poison_donor: 0 must be -1 (the donor rule) or a class of mnist (0-9) other than forget_class 0"),
    (["--method=concept_poison", "--concept_poison_donor=10"], "concept_poison_donor: 10 must be -1"),
    (["--method=concept_poison", "--concept_poison_donor=3", "--concept_poison_donor_rule=shared"],
     "concept_poison_donor_rule: shared would pick nothing: concept_poison_donor 3 names the donor"),
    (["--method=concept_poison", "--concept_poison_donor_concept=tall"],
     "concept_poison_donor_concept: 'tall' would cut nothing: only concept_poison_mode=localized"),
    (["--method=concept_poison", "--concept_poison_locate=clip_window", "--concept_poison_mode=localized"],
     "needs concept_bank=clip (not cav)"),
    (["--method=concept_poison", "--concept_bank=clip", "--concept_poison_locate=clip_window"],
     "would locate nothing: only concept_poison_mode=localized"),
    (["--method=concept_poison", "--concept_bank=clip", "--concept_poison_locate=clip_window_release",
      "--concept_poison_mode=center", "--concept_poison_variant=release"], "(mode here: center, variant release)"),
    (["--method=concept_poison", "--concept_poison_locate=gradcam", "--concept_poison_mode=center"],
     "gradcam places the patch on the forget image, which only concept_poison_mode=localized does"),
    (["--method=concept_poison", "--concept_poison_locate=gradcam", "--concept_poison_mode=localized",
      "--concept_poison_top_m=3"], "concept_poison_top_m: 3 patches would all go to one place"),
    (["--method=concept_poison", "--concept_poison_locate=pcbm_margin", "--concept_poison_mode=localized"],
     "pcbm_margin compares CLIP embeddings of windows with a concept word's text vector, so it needs "
     "concept_bank=clip (not cav)"),
])
def test_config_errors(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main.main([*args, f"--out_dir={tmp_path}"])
    assert exit_.value.code == 2 and message in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_main_records_the_metrics_and_the_donor(setup, data_root, capsys):
    """Through main.py's command line, loading the fixture's cached original (same recipe, same out_dir)."""
    status = main.main(["--method=concept_poison", f"--data_root={data_root}", "--train_limit=3000",
                        "--test_limit=1000", "--train_epochs=2", "--seeds=0", "--concept_examples=1500",
                        "--concept_poison_epochs=3", "--compare_retrain=false", f"--out_dir={setup['cfg'].out_dir}",
                        "--num_threads=2"])
    out, err = capsys.readouterr()
    assert status == 0, err[-2000:]
    doc = json.loads(Path(out.strip().splitlines()[-1]).read_text())
    row = doc["seeds"][0]
    assert {"fr", "fr_attack_accuracy", "donor_absorption", "shared_concept_retention"} <= set(row)
    assert doc["meta"]["original"]["trained_now"] is False
    traces = doc["meta"]["per_seed"][0]["traces"]
    assert traces["donor"] != 0 and len(traces["top_concepts"]) == 5 and "_state" not in traces


def test_clip_bank_runs_the_method_steps_with_random_weights(setup):
    """The paper's bank through steps 1-4 with a randomly initialised open_clip RN50 (no download)."""
    pytest.importorskip("open_clip")
    cfg = validate(Config(**{**setup["cfg"].__dict__, "concept_bank": "clip", "concept_clip_pretrained": ""}))
    rows = setup["rows"][:16]  # RN50 at 224 on a CPU: few images
    bank = cp.build_bank(cfg, setup["original"], setup["task"], rows)
    assert bank.kind == "clip" and len(bank.names) == bank.vectors.shape[0] > 10
    head, margins = cp.fit_head(bank, setup["task"], rows, 10)
    assert margins.shape == (16, len(bank.names)) and head.linear.weight.shape == (10, len(bank.names))
    donor, _, _ = choose_donor(head.weight, 0, rank_concepts(head.linear, 0, "weight"), 5, "confusion")
    assert donor != 0


def test_gradcam_locator_through_the_method(setup, monkeypatch):
    """concept_poison_locate=gradcam (the release's ablation locator, any bank): the donor's patch lands where
    Grad-CAM of the original for the forget class peaks on each forget image, and nowhere else; the donor's
    patch is still cut where its concept peaks (pixel IG for the cav bank)."""
    from concepts.gradcam import gradcam_peaks
    from concepts.poison import _window

    seen, attributed = {}, []
    real_ig = cp.pixel_attributions
    monkeypatch.setattr(cp, "pixel_attributions", lambda score, x, *a: attributed.append(len(x)) or
                        real_ig(score, x, *a))
    monkeypatch.setattr(cp, "fine_tune", lambda model, task, images, labels, cfg: seen.update(x=images) or [])
    run_method(setup, concept_poison_mode="localized", concept_poison_locate="gradcam")
    assert attributed == [len(setup["split"].forget)]  # IG once, on each row's donor image: where its patch is cut
    data, split = setup["data"], setup["split"]
    clean = data.train.images[split.forget]
    centres = gradcam_peaks(setup["original"], lambda x: data.inputs(x, train=False), clean, 0)
    assert len(set(map(tuple, centres.tolist()))) > 1  # the map moves with the image
    rows, cols = _window(centres, 8, 28, 28)
    inside = torch.zeros_like(clean, dtype=torch.bool)
    for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
        inside[i, :, r:r + 8, c:c + 8] = True
    poisoned = seen["x"][len(split.remain):]
    assert poisoned[~inside].equal(clean[~inside])
    assert (poisoned != clean).flatten(1).any(1).float().mean() > 0.9


def test_pcbm_margin_locator_through_the_method(setup, monkeypatch):
    """concept_poison_locate=pcbm_margin: the patch lands where the windows' cosines to every concept, weighed by
    the forget class's PCBM weights, peak; the donor's patch is cut at its concept's own CLIP-window peak."""
    from concepts import clip_windows
    from concepts.bank import ConceptBank
    from concepts.clip_bank import ClipEmbedder
    from concepts.poison import _window

    embed = ClipEmbedder(Quadrants(), (16, 16), 1.0, torch.device("cpu"))
    bank = ConceptBank("clip", ["ink top-left", "ink top-right", "ink bottom-left", "ink bottom-right"],
                       torch.eye(4, 5), torch.zeros(4), embed)
    monkeypatch.setattr(cp, "build_bank", lambda cfg, original, task, rows: bank)
    heads, calls, seen = [], [], {}
    real_fit, real_peaks = cp.fit_head, clip_windows.window_peaks
    monkeypatch.setattr(cp, "fit_head", lambda *a, **k: heads.append(real_fit(*a, **k)) or heads[-1])
    monkeypatch.setattr(clip_windows, "window_peaks", lambda e, v, x, *a, **k: calls.append((v, k)) or
                        real_peaks(e, v, x, *a, **k))
    monkeypatch.setattr(cp, "fine_tune", lambda model, task, images, labels, cfg: seen.update(x=images) or [])
    _, traces, _ = run_method(setup, concept_bank="clip", concept_poison_mode="localized",
                              concept_poison_locate="pcbm_margin")
    weight = heads[0][0].weight[0].float()
    (donor_vector, donor_kw), (forget_vectors, forget_kw) = calls
    assert donor_vector.equal(bank.vectors[bank.names.index(traces["donor_concept"])]) and not donor_kw
    assert forget_vectors.equal(bank.vectors) and forget_kw["weights"].equal(weight)
    split = setup["split"]
    clean = setup["data"].train.images[split.forget]
    rows, cols = _window(real_peaks(embed, bank.vectors, clean, weights=weight), 8, 28, 28)
    inside = torch.zeros_like(clean, dtype=torch.bool)
    for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
        inside[i, :, r:r + 8, c:c + 8] = True
    poisoned = seen["x"][len(split.remain):]
    assert poisoned[~inside].equal(clean[~inside]) and (poisoned != clean).flatten(1).any(1).float().mean() > 0.9
