"""The ``clip`` bank's concept words: the built-in lists per dataset and a words file's, read without torch
(``config.py`` hashes the list a run reads while parsing, before anything heavy is imported).

Concept words. The release pulls them from ConceptNet (``get_single_concept_data``: the
HasA, MadeOf, HasProperty, IsA (weight > 1) and PartOf edges of every class name),
lemmatises them (``clean_concepts``) and drops the class names themselves. There is no
network here, so ``WORDS`` holds fixed stand-ins for that pull: part / material /
property words of the kind those edges give for the CIFAR-10 and CIFAR-100 classes, and
short visual words for MNIST and Fashion-MNIST (ConceptNet says little about digits).
The CIFAR lists hold the concepts of the release's hand-picked cases (``CASES`` in
``revision/config.py``; ``RELEASE_CASES`` in ``concepts/donor.py``) in its spelling.
No list contains a class name. A ``words_file`` (one word per line; blank lines and
``#`` comments skipped) replaces the built-in list, e.g. with a real ConceptNet pull.
"""

from __future__ import annotations

from pathlib import Path

from concepts import ConceptError

WORDS: dict[str, tuple[str, ...]] = {
    # airplane automobile bird cat deer dog frog horse ship truck
    "cifar10": (
        "fur", "whiskers", "paws", "claws", "tail", "pointed ears", "snout", "fangs", "collar", "leash",
        "antler", "hooves", "mane", "saddle", "bridle", "long legs", "spots", "feathers", "beak", "wings",
        "nest", "talons", "eggs", "webbed feet", "slimy skin", "bulging eyes", "pond", "lily pad", "grass",
        "barn", "metal", "engine", "wheels", "tires", "windshield", "headlights", "bumper", "license plate",
        "doors", "steering wheel", "seats", "highway", "cargo", "trailer", "cab", "exhaust pipe", "jet engine",
        "propellers", "cockpit", "runway", "fuselage", "landing gear", "sky", "clouds", "hull", "deck", "sail",
        "mast", "anchor", "water", "waves", "harbor", "smokestack", "portholes", "furry", "green", "brown",
        "white", "shiny", "fast", "pet", "mammal", "amphibian", "vehicle", "aircraft", "boat", "machine",
        "horseback", "gear",  # with antler, propellers, amphibian: the release's hand-picked cases' concepts
    ),
    # the 100 fine classes, by superclass
    "cifar100": (
        # aquatic mammals, fish
        "flippers", "blowhole", "dam", "flat tail", "whiskers", "wet fur", "ocean", "fins", "gills", "scales",
        "sharp teeth", "aquarium", "river",
        # flowers
        "petals", "stem", "thorns", "pollen", "seeds", "bouquet", "vase", "garden", "bloom",
        # food containers
        "glass", "ceramic", "porcelain", "handle", "lid", "rim", "label", "saucer", "aluminum", "soup",
        "coffee", "drink",
        # fruit and vegetables
        "peel", "core", "juice", "pulp", "citrus", "vegetable", "fruit", "cap", "spores", "sweet", "sour",
        "crunchy", "ripe",
        # household electrical devices
        "screen", "keys", "buttons", "cord", "plug", "light bulb", "lampshade", "clock face", "numbers",
        "clock hands", "dial", "receiver", "antenna", "remote control", "electricity",
        # furniture
        "wood", "cushions", "pillow", "mattress", "blanket", "drawers", "shelf", "backrest", "armrest",
        "upholstery", "hangers", "legs",
        # insects
        "antennae", "wings", "stinger", "honey", "hive", "exoskeleton", "six legs", "cocoon", "larva", "insect",
        # large carnivores
        "fur", "claws", "fangs", "mane", "stripes", "spots", "paws", "predator", "den", "pack",
        # large man-made outdoor things
        "tower", "windows", "roof", "walls", "chimney", "door", "brick", "concrete", "steel", "cables", "arch",
        "turret", "moat", "asphalt", "lane markings", "city", "building",
        # large natural outdoor scenes
        "sky", "snow", "peak", "rock", "sand", "beach", "waves", "water", "trees", "grassland", "horizon",
        "fog", "rain",
        # large omnivores and herbivores
        "hump", "horns", "hooves", "udder", "trunk", "tusks", "big ears", "pouch", "long tail", "desert",
        "farm", "ape", "herd",
        # medium mammals
        "quills", "bushy tail", "mask", "striped tail", "nocturnal",
        # non-insect invertebrates
        "shell", "pincers", "slime", "web", "eight legs", "soil", "seafood",
        # people
        "face", "hair", "eyes", "nose", "mouth", "hands", "arms", "smile", "beard", "clothes", "person",
        "child", "adult",
        # reptiles
        "scaly skin", "forked tongue", "jaws", "fossil", "swamp", "coil", "venom", "reptile",
        # small mammals
        "long ears", "cheek pouches", "burrow", "nuts", "rodent", "carrot",
        # trees
        "bark", "branches", "leaves", "roots", "needles", "pine cone", "acorn", "fronds", "coconut", "autumn",
        # vehicles
        "wheels", "tires", "handlebars", "pedals", "chain", "seat", "engine", "passengers", "rails",
        "headlights", "windshield", "truck bed", "helmet", "station", "blade", "tracks", "cannon", "nose cone",
        "flames", "smoke", "launch pad", "overhead wires", "plow", "military", "space",
        # properties and kinds
        "newborn human", "cetacean",  # with pink, chimney, lampshade: the release's hand-picked cases' concepts
        "red", "green", "yellow", "brown", "white", "black", "pink", "round", "tall", "large", "wild",
        "mammal", "vehicle", "furniture", "container", "plant", "animal", "machine",
    ),
    # digits 0-9
    "mnist": (
        "circle", "oval", "loop", "two loops", "closed loop", "open loop", "straight line", "vertical line",
        "horizontal line", "diagonal line", "curve", "arc", "hook", "corner", "sharp angle", "crossing lines",
        "hole", "tail", "stroke", "thick stroke", "thin stroke", "slant", "zigzag", "spiral", "handwriting", "ink",
    ),
    # T-shirt/top trouser pullover dress coat sandal shirt sneaker bag ankle boot
    "fashion_mnist": (
        "sleeve", "long sleeves", "short sleeves", "collar", "neckline", "hood", "buttons", "zipper", "pocket",
        "heel", "high heel", "sole", "strap", "laces", "buckle", "toe", "open toe", "ankle", "handle",
        "shoulder strap", "waistband", "belt loops", "hem", "skirt", "knit", "wool", "cotton", "denim",
        "leather", "rubber", "canvas", "stripes", "logo", "print", "folds", "fabric",
    ),
}


def read_words(path: str | Path) -> list[str]:
    """One concept per line; text after ``#`` and blank lines are skipped, repeats kept once (first place)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ConceptError(f"concept_words file {path} cannot be read ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise ConceptError(f"concept_words file {path} is not UTF-8 text (byte {err.start})") from None
    words = [line.split("#", 1)[0].strip() for line in lines]
    return list(dict.fromkeys(w for w in words if w))


def concept_words(dataset: str, words_file: str = "") -> list[str]:
    """The concept words: ``words_file``'s if given, else the built-in list for ``dataset``."""
    if words_file:
        words = read_words(words_file)
        if not words:
            raise ConceptError(f"concept_words file {words_file} lists no concept words")
        return words
    if dataset not in WORDS:
        raise ConceptError(f"no built-in concept words for dataset {dataset!r} (have {', '.join(WORDS)}); "
                           "set concept_words to a file with one word per line")
    return list(WORDS[dataset])
