"""The clip concept bank on a randomly initialised open_clip RN50 (no weights, no network)."""

from __future__ import annotations

import time

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from concepts import ConceptError, clip_bank  # noqa: E402
from concepts.clip_bank import CLIP_MEAN, WORDS, build_clip_bank, concept_words, to_clip_input  # noqa: E402

CIFAR100 = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel
can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin elephant
flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree
motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel
streetcar sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip turtle wardrobe whale
willow_tree wolf woman worm"""
CLASS_NAMES = {
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    "cifar100": CIFAR100.split(),  # noqa: SIM905
    "mnist": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", *map(str, range(10))],
    "fashion_mnist": ["t-shirt/top", "t-shirt", "top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                      "sneaker", "bag", "ankle boot"],
}
WORDS_FILE = "# concepts for the test\nfur\n\n  wheels  \nstraight line # a stroke\n#beak\nfur\nsail\n"
EXPECTED = ["fur", "wheels", "straight line", "sail"]


@pytest.fixture(scope="module")
def words_path(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("words") / "words.txt"
    path.write_text(WORDS_FILE)
    return path


@pytest.fixture(scope="module")
def mnist_bank(words_path):
    torch.manual_seed(0)
    return build_clip_bank("mnist", "RN50", "", str(words_path))


@pytest.fixture(scope="module")
def cifar_bank(words_path):
    torch.manual_seed(0)
    return build_clip_bank("cifar10", "RN50", "", str(words_path))


def test_words_file_gives_unit_text_vectors(mnist_bank):
    assert mnist_bank.kind == "clip"
    assert mnist_bank.names == EXPECTED  # comments, blank lines and the repeated word skipped
    assert mnist_bank.vectors.shape == (len(EXPECTED), 1024)  # RN50's joint embedding width
    assert mnist_bank.vectors.dtype == torch.float32
    assert torch.allclose(mnist_bank.vectors.norm(dim=1), torch.ones(len(EXPECTED)), atol=1e-5)
    assert torch.equal(mnist_bank.intercepts, torch.zeros(len(EXPECTED)))
    assert mnist_bank.val_accuracy == {}
    # different words, different directions
    assert (mnist_bank.vectors @ mnist_bank.vectors.T - torch.eye(len(EXPECTED))).abs().max() > 1e-3


def test_model_is_frozen_in_eval(mnist_bank):
    model = mnist_bank.embed.model
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert mnist_bank.embed.image_size == (224, 224)


def test_mnist_margins_are_projections_with_pixel_gradients(mnist_bank):
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1), requires_grad=True)
    emb = mnist_bank.embed(x)
    margins = mnist_bank.margins(emb)
    assert emb.shape == (4, 1024)
    assert margins.shape == (4, len(EXPECTED))
    assert torch.allclose(margins, emb @ mnist_bank.vectors.T, rtol=1e-4, atol=1e-4)
    margins.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_cifar_bytes_and_their_float_copy_agree_with_gradients(cifar_bank):
    u = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    from_bytes = cifar_bank.concept_scores(u)
    assert from_bytes.shape == (4, len(EXPECTED))
    # attribution hands CIFAR images over as .float() of the stored bytes (0..255)
    f = u.float().requires_grad_(True)
    from_float = cifar_bank.concept_scores(f)
    assert torch.allclose(from_bytes, from_float, rtol=1e-4, atol=1e-4)
    from_float.sum().backward()
    assert f.grad is not None and f.grad.abs().sum() > 0
    assert cifar_bank.embed.pixel_scale == 255.0 and not cifar_bank.embed.model.training


def test_clip_input_preprocessing():
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    grey = torch.full((2, 1, 28, 28), 0.5)
    out = to_clip_input(grey, (224, 224), 1.0)
    assert out.shape == (2, 3, 224, 224)
    expected = (0.5 - mean) / torch.tensor(clip_bank.CLIP_STD).view(1, 3, 1, 1)
    assert torch.allclose(out, expected.expand_as(out), atol=1e-6)
    # CIFAR bytes: pixel value = 255 * CLIP mean -> (close to) zero after normalising
    u = (mean * 255).round().to(torch.uint8).expand(1, 3, 32, 32)
    assert to_clip_input(u, (224, 224), 255.0).abs().max() < 0.01
    assert torch.equal(to_clip_input(u, (64, 64)), to_clip_input(u, (64, 64), 255.0))  # uint8 -> /255 by default
    with pytest.raises(ValueError):
        to_clip_input(torch.rand(1, 2, 8, 8), (16, 16))


def test_builtin_lists_have_no_repeats_or_class_names():
    assert set(WORDS) == set(CLASS_NAMES) and len(CLASS_NAMES["cifar100"]) == 100
    sizes = {"cifar10": 50, "cifar100": 120, "mnist": 15, "fashion_mnist": 20}
    for dataset, words in WORDS.items():
        lowered = [w.strip().lower() for w in words]
        assert len(words) >= sizes[dataset], dataset
        assert len(set(lowered)) == len(lowered), dataset
        assert all(lowered) and lowered == list(words), dataset
        names = {c.replace("_", " ") for c in CLASS_NAMES[dataset]}
        forbidden = names | {n + "s" for n in names} | {n + "es" for n in names}
        assert not forbidden & set(lowered), (dataset, sorted(forbidden & set(lowered)))


def test_builtin_words_used_without_file(words_path):
    for dataset, words in WORDS.items():
        assert concept_words(dataset) == list(words)
        assert concept_words(dataset, str(words_path)) == EXPECTED


def test_bad_inputs_raise_concept_error(tmp_path):
    with pytest.raises(ConceptError, match="svhn"):
        build_clip_bank("svhn", "RN50", "")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(ConceptError, match="no concept words"):
        build_clip_bank("mnist", "RN50", "", str(empty))
    with pytest.raises(ConceptError, match="cannot be read"):
        build_clip_bank("mnist", "RN50", "", str(tmp_path / "missing.txt"))
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConceptError, match="latin1.txt is not UTF-8 text"):
        concept_words("mnist", str(latin))
    with pytest.raises(ConceptError, match="no-such-net"):
        build_clip_bank("mnist", "no-such-net", "")
    with pytest.raises(ConceptError, match="'no-such-tag'.*openai"):
        build_clip_bank("mnist", "RN50", "no-such-tag")


def test_uncached_weights_offline_fail_fast_naming_tag_and_cache(tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub.constants")
    before = hub.HF_HUB_OFFLINE
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    monkeypatch.setattr(clip_bank, "_reachable", lambda url, timeout=0.0: False)  # offline, even on a networked box
    start = time.monotonic()
    with pytest.raises(ConceptError) as err:
        build_clip_bank("cifar10", "RN50", "openai")
    assert time.monotonic() - start < 20
    message = str(err.value)
    assert "\n" not in message
    for part in ("RN50", "'openai'", str(tmp_path), "concept_bank=cav"):
        assert part in message
    assert hub.HF_HUB_OFFLINE is before  # the cache-only attempt put the user's setting back


def test_cache_only_attempt_restores_hub_setting_and_failed_download_is_concept_error(tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub.constants")
    before = hub.HF_HUB_OFFLINE
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(clip_bank, "_reachable", lambda url, timeout=0.0: True)
    seen = []

    def failing(*args, **kwargs):
        seen.append((hub.HF_HUB_OFFLINE, kwargs.get("force_quick_gelu")))
        raise OSError("connection reset")

    monkeypatch.setattr(open_clip, "create_model", failing)
    with pytest.raises(ConceptError, match="'openai'.*could not be downloaded"):
        build_clip_bank("cifar10", "RN50", "openai")
    assert seen == [(True, True), (before, True)]  # cache only first, then the network; QuickGELU as OpenAI's
    assert hub.HF_HUB_OFFLINE is before


def test_missing_open_clip_is_concept_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_open_clip(name, *args, **kwargs):
        if name == "open_clip":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_open_clip)
    with pytest.raises(ConceptError, match="pip install open_clip_torch"):
        build_clip_bank("mnist", "RN50", "")


@pytest.mark.parametrize("entry", ["main", "tune"])
@pytest.mark.parametrize("key, message", [("--concept_clip_pretrained=no-such-tag", "'no-such-tag'"),
                                          ("--concept_words=MISSING", "cannot be read")])
def test_the_bank_is_checked_before_the_original_is_trained(data_root, tmp_path, capsys, entry, key, message):
    """A clip bank that cannot be built stops main.py / tune.py in one line before the original model's training
    (hours for the CIFAR presets), not after it; main.py writes nothing."""
    import main
    import tune

    out = tmp_path / "out"
    argv = ["--method=concept_poison", "--concept_bank=clip", key.replace("MISSING", str(tmp_path / "no.txt")),
            f"--data_root={data_root}", "--download=false", "--train_limit=500", "--test_limit=200",
            "--train_epochs=1", "--seeds=0", f"--out_dir={out}", "--compare_retrain=false"]
    if entry == "tune":
        argv += ["--trials=1", f"--tuned_dir={tmp_path / 'tuned'}"]
    assert (main.main(argv) if entry == "main" else tune.main(argv)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (out / "checkpoints").exists() and (entry == "tune" or not out.exists())
