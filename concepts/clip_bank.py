"""The ``clip`` concept bank: concept words as CLIP text embeddings, images through CLIP's image encoder.

This is the paper's bank (Chang et al., arXiv 2405.15662). The release's
``learn_concepts_multimodal.py`` (``learn_conceptbank``) tokenises each concept word on
its own (the prompt is the bare word), embeds it with CLIP RN50's text encoder and
divides the embedding by its norm; the PCBM head is then trained on the *unnormalised*
CLIP image embeddings (``backbone.encode_image``) of images resized to 224 px and
normalised with CLIP's mean and std (``CLIP_MEAN`` / ``CLIP_STD`` and ``clip_normalize``
in ``revision/concept_tools.py``). Here the model comes from ``open_clip``
(``open_clip_torch``), whose ``RN50`` / ``openai`` weights are OpenAI's.

Concept words: ``concepts/words.py`` (the built-in lists, a words file's).

Weights. open_clip keeps the tagged weights in the Hugging Face hub cache
(``huggingface_hub``'s ``HF_HUB_CACHE``, ~/.cache/huggingface/hub unless ``HF_HOME`` /
``HF_HUB_CACHE`` say otherwise) when the tag has a hub copy, else in ~/.cache/clip. The
cache is tried first with the hub set offline; only if the weights are missing and
their host answers within a few seconds is a download attempted, so an offline machine
gets a ``ConceptError`` at once instead of the hub client's minute of retries.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from urllib.parse import urlparse

import torch
import torch.nn.functional as F

from concepts import ConceptError
from concepts.bank import ConceptBank
from concepts.words import WORDS, concept_words, read_words  # noqa: F401  (WORDS, read_words: re-exported)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PROBE_TIMEOUT_S = 3.0  # how long the weights' host may take to answer before it counts as unreachable
TEXT_BATCH = 256

# Stored pixel scale per dataset (data/datasets.py): MNIST family float in [0, 1]; CIFAR uint8 in [0, 255]
# (and attribution hands CIFAR images over as ``.float()`` of the stored bytes, still 0..255).
PIXEL_SCALE: dict[str, float] = {"mnist": 1.0, "fashion_mnist": 1.0, "cifar10": 255.0, "cifar100": 255.0}


def to_unit_rgb(images: torch.Tensor, size: tuple[int, int], pixel_scale: float | None = None) -> torch.Tensor:
    """Stored images (N x 1|3 x H x W) -> [0, 1], three channels, ``size`` (bilinear); differentiable.

    ``pixel_scale`` is what the stored values are divided by (255 for CIFAR bytes, 1 for
    MNIST floats); None takes 255 for uint8 and 1 otherwise.
    """
    scale = pixel_scale if pixel_scale is not None else (255.0 if images.dtype == torch.uint8 else 1.0)
    x = images.to(torch.float32) / scale
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected N x 1 x H x W or N x 3 x H x W images, got {tuple(images.shape)}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def clip_normalize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB images -> CLIP's normalisation (its mean and std per channel)."""
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def to_clip_input(images: torch.Tensor, size: tuple[int, int], pixel_scale: float | None = None) -> torch.Tensor:
    """Stored images -> CLIP's input: ``to_unit_rgb`` at ``size``, then ``clip_normalize``. Differentiable."""
    return clip_normalize(to_unit_rgb(images, size, pixel_scale))


class ClipEmbedder:
    """Stored images -> CLIP image embeddings (``encode_image``, not normalised), with gradients to the images.

    The model is frozen (no parameter takes gradients) and stays in eval mode.
    """

    def __init__(self, model: torch.nn.Module, image_size: tuple[int, int], pixel_scale: float | None,
                 device: torch.device) -> None:
        self.model = model
        self.image_size = image_size
        self.pixel_scale = pixel_scale
        self.device = device

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = to_clip_input(images.to(self.device), self.image_size, self.pixel_scale)
        return self.model.encode_image(x).float()


def _image_size(open_clip: ModuleType, model: torch.nn.Module) -> tuple[int, int]:
    size = getattr(model.visual, "image_size", None) or open_clip.get_model_preprocess_cfg(model)["size"]
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether ``url``'s host answers an HTTP request at all (any status) within ``timeout`` seconds."""
    parts = urlparse(url)
    try:
        urllib.request.urlopen(urllib.request.Request(f"{parts.scheme}://{parts.netloc}/", method="HEAD"),
                               timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):  # URLError, DNS failure and timeouts are OSErrors
        return False
    return True


@contextmanager
def _quiet_cache_only(hub: ModuleType | None) -> Iterator[None]:
    """Hub downloads off (cache only) and open_clip's error log muted, for the first, cache-only attempt."""
    muted = logging.root.manager.disable
    logging.disable(max(muted, logging.ERROR))
    old = None
    if hub is not None:
        old, hub.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE, True
    try:
        yield
    finally:
        if hub is not None:
            hub.HF_HUB_OFFLINE = old
        logging.disable(muted)


def _hub_constants(open_clip: ModuleType) -> ModuleType | None:
    """``huggingface_hub.constants`` when open_clip downloads through the hub, else None."""
    if not open_clip.pretrained.has_hf_hub():
        return None
    import huggingface_hub.constants

    return huggingface_hub.constants


def _load_model(open_clip: ModuleType, model_name: str, pretrained: str, device: torch.device) -> torch.nn.Module:
    """open_clip's ``model_name`` with weights ``pretrained`` (a tag or a file; '' = random init)."""
    if model_name not in open_clip.list_models():
        raise ConceptError(f"concept_clip_model {model_name!r} is not an open_clip architecture "
                           "(open_clip.list_models() lists them; the release uses RN50)")
    if not pretrained:
        return open_clip.create_model(model_name, pretrained=None, device=device)
    if os.path.isfile(pretrained):
        try:
            return open_clip.create_model(model_name, pretrained=pretrained, device=device)
        except Exception as err:  # open_clip raises RuntimeError / KeyError / pickling errors for a bad file
            raise ConceptError(f"concept_bank=clip: {pretrained} does not load into open_clip {model_name} "
                               f"({type(err).__name__}: {err})") from None
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"
        raise ConceptError(f"concept_clip_pretrained {pretrained!r} is neither an open_clip weights tag of "
                           f"{model_name} (tags: {tags}) nor a file")
    hub = _hub_constants(open_clip)
    if hub is not None and cfg.get("hf_hub"):  # open_clip prefers the hub copy when there is one
        where = f"the Hugging Face hub cache {hub.HF_HUB_CACHE} (repo {cfg['hf_hub'].rstrip('/')})"
        url, cached = hub.ENDPOINT, None
    elif not cfg.get("url"):
        raise ConceptError(f"concept_bank=clip: open_clip weights {model_name} pretrained={pretrained!r} are only on "
                           "the Hugging Face hub: pip install huggingface_hub")
    else:
        hub = None
        where = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(cfg.get("url", "")))
        url, cached = cfg.get("url", ""), os.path.isfile(where)
    # OpenAI's CLIP (and its tags' weights) uses QuickGELU; open_clip's plain names do not
    kwargs = {"pretrained": pretrained, "device": device, "force_quick_gelu": bool(cfg.get("quick_gelu", False))}
    if cached is not False:
        try:
            with _quiet_cache_only(hub):
                return open_clip.create_model(model_name, **kwargs)
        except Exception:  # not cached (or unreadable): try the network below
            pass
    host = urlparse(url).netloc or url
    if (hub is not None and hub.HF_HUB_OFFLINE) or not _reachable(url):
        why = "HF_HUB_OFFLINE is set" if hub is not None and hub.HF_HUB_OFFLINE else f"{host} is unreachable"
        raise ConceptError(f"concept_bank=clip: open_clip weights {model_name} pretrained={pretrained!r} are not in "
                           f"{where} and {why}; run once online to cache them, or use concept_bank=cav or nmf")
    try:
        return open_clip.create_model(model_name, **kwargs)
    except Exception as err:  # the hub client, urllib and checksum failures share no base class
        raise ConceptError(f"concept_bank=clip: open_clip weights {model_name} pretrained={pretrained!r} could not "
                           f"be downloaded from {host} into {where} ({type(err).__name__}); run again online, "
                           "or use concept_bank=cav or nmf") from None


@torch.no_grad()
def _text_vectors(open_clip: ModuleType, model: torch.nn.Module, model_name: str, words: list[str],
                  device: torch.device) -> torch.Tensor:
    """K x D unit-norm text embeddings of the bare words, float32 on the CPU."""
    tokenizer = open_clip.get_tokenizer(model_name)
    parts = [model.encode_text(tokenizer(words[i:i + TEXT_BATCH]).to(device)).float().cpu()
             for i in range(0, len(words), TEXT_BATCH)]
    vectors = torch.cat(parts)
    return (vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)).contiguous()


def _open_clip() -> ModuleType:
    """The ``open_clip`` module, or a one-line ``ConceptError`` when open_clip_torch is not installed."""
    try:
        import open_clip
    except ImportError:
        raise ConceptError("concept_bank=clip needs open_clip_torch: pip install open_clip_torch") from None
    return open_clip


def check_clip_bank(dataset: str, model_name: str = "RN50", pretrained: str = "openai", words_file: str = "") -> None:
    """Raise now the ``ConceptError`` that ``build_clip_bank`` would raise after the original model's training:
    open_clip_torch missing, the words file unreadable or empty, the weights neither cached nor reachable
    (a download, if one is needed, happens here). Loads the model once on the CPU: seconds."""
    open_clip = _open_clip()
    concept_words(dataset, words_file)
    _load_model(open_clip, model_name, pretrained, torch.device("cpu"))


def build_clip_bank(dataset: str, model_name: str = "RN50", pretrained: str = "openai", words_file: str = "",
                    device: torch.device | str = "cpu") -> ConceptBank:
    """The ``clip`` bank: ``concept_words`` as CLIP text vectors (intercepts 0), CLIP images as the embedding.

    ``pretrained`` is an open_clip weights tag of ``model_name`` or a weights file; ''
    builds a randomly initialised model (tests only). Raises ``ConceptError`` with one
    line when open_clip_torch is missing or the weights are neither cached nor reachable.
    """
    open_clip = _open_clip()
    words = concept_words(dataset, words_file)
    device = torch.device(device)
    model = _load_model(open_clip, model_name, pretrained, device)
    model.eval().requires_grad_(False)
    vectors = _text_vectors(open_clip, model, model_name, words, device)
    embed = ClipEmbedder(model, _image_size(open_clip, model), PIXEL_SCALE.get(dataset), device)
    return ConceptBank("clip", words, vectors, torch.zeros(len(words)), embed, {})
