"""Adjective lexicon: the words typed "adjective" in a prompt's token map, with no tagger installed.

Token-type statistics compare attention on numerals, nouns, adjectives and other words, so adjectives
must be found the same way on every machine. This module is a fixed, documented word list grouped by
kind, plus comparative and superlative forms of those words ("bigger", "tallest"). An optional
part-of-speech tagger can add to it (see `numina.prompts.tagger`). May import only the standard
library.
"""

from __future__ import annotations


def _set(words: str) -> frozenset[str]:
    """A word set from a space-separated string (keeps the tables compact and readable)."""
    return frozenset(words.split())


ADJECTIVE_GROUPS: dict[str, frozenset[str]] = {
    "colour": _set(
        "red blue green yellow black white grey gray orange purple pink brown golden gold silver violet "
        "crimson scarlet turquoise teal cyan magenta beige ivory navy maroon amber bronze copper emerald "
        "indigo lavender tan khaki olive ruby azure dark light pale bright colorful colourful multicolored "
        "multicoloured rainbow neon pastel vivid glowing transparent translucent"
    ),
    "size": _set(
        "small large big tiny little huge giant massive enormous gigantic colossal miniature mini medium "
        "tall short long wide narrow thick thin fat slim slender skinny towering vast immense petite "
        "oversized deep shallow high low"
    ),
    "material": _set(
        "wooden metal metallic glass plastic paper stone steel iron leather woolen woollen wool cotton silk "
        "marble concrete brick ceramic porcelain rubber crystal velvet denim bamboo clay straw wicker "
        "golden silken"
    ),
    "texture": _set(
        "fluffy furry hairy smooth rough soft hard shiny glossy matte fuzzy spiky scaly silky velvety wet "
        "dry sticky slimy muddy dusty rusty sandy grassy feathery woolly bumpy wrinkled"
    ),
    "age": _set("old young new ancient elderly modern vintage antique teenage aged newborn"),
    "shape": _set(
        "round square circular triangular rectangular oval spherical cubic curved straight flat pointed "
        "hexagonal cylindrical conical crooked twisted"
    ),
    "weather_light": _set(
        "hot cold warm cool frozen icy snowy sunny cloudy rainy misty foggy stormy windy sunlit moonlit "
        "starry dim gloomy shadowy hazy"
    ),
    "quality": _set(
        "happy sad angry playful calm quiet peaceful tranquil serene busy bustling crowded empty famous "
        "beautiful pretty cute ugly fierce wild gentle lonely tired sleepy curious brave friendly majestic "
        "elegant futuristic anthropomorphic realistic magical mysterious distant dense clear open barren "
        "lush heavy fast slow quick swift strong powerful weak rich poor clean dirty fresh ripe rotten "
        "broken sharp dull loud noisy silent outdoor indoor urban rural tropical arctic exotic strange "
        "shy proud fancy simple plain huge hungry graceful cheerful joyful excited nervous scared "
        "adorable lovely vibrant rustic cozy cosy abandoned haunted enchanted sleek sturdy fragile "
        "delicate agile clumsy chubby fluffy smiling"
    ),
}
ADJECTIVES: frozenset[str] = frozenset().union(*ADJECTIVE_GROUPS.values())


def _base_forms(word: str) -> list[str]:
    """Candidate positive forms of a comparative or superlative ("bigger" -> "big", "happiest" -> "happy")."""
    for suffix in ("est", "er"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            stem = word[: -len(suffix)]
            forms = [stem, stem + "e"]
            if len(stem) > 2 and stem[-1] == stem[-2]:
                forms.append(stem[:-1])  # bigger -> big
            if stem.endswith("i"):
                forms.append(stem[:-1] + "y")  # happier -> happy
            return forms
    return []


def is_adjective(word: str) -> bool:
    """Whether a word is in the adjective lexicon, directly or as a comparative/superlative form."""
    w = word.lower()
    return w in ADJECTIVES or any(form in ADJECTIVES for form in _base_forms(w))
