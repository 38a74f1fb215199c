"""Nouns: singular and plural forms, so that a target "cat" finds "cats" in the prompt and back.

The user's targets and CountBench's annotations name a noun as written ("cats", "children"), and a prompt
may use the other number ("the cat", "a child"). This module decides whether two words are forms of the
same noun and whether a word looks plural. It may import only the standard library.

Rule set (on lower-case words; "-s" below means "ends with s"):
- irregular plurals from a table (children/child, people/person, mice/mouse, geese/goose, feet/foot,
  teeth/tooth, leaves/leaf, wolves/wolf, knives/knife, cacti/cactus, ...);
- "-men" -> "-man" (men, women, firemen, snowmen), except a few singulars (omen, specimen, ...);
- invariant nouns from a table (sheep, deer, fish, aircraft, samurai, debris, species, ...);
- "-ies" -> "-y" (puppies/puppy), "-ves" -> "-f"/"-fe", "-es" -> "" (boxes, buses, dishes, heroes),
  "-s" -> "" (cats, shoes); `singular` takes "-oes" to "-o" except for "-oe" nouns (shoe, toe, canoe).
  A word ending in "-ss", "-us", "-is" or "-ous" is not a regular plural.
Two words are the same noun when their sets of possible singulars meet; the candidate sets may hold a
non-word ("boxe"), which cannot match a real word, so the rule errs only on exotic pairs.
"""

from __future__ import annotations


def _set(words: str) -> frozenset[str]:
    """A word set from a space-separated string (keeps the tables compact and readable)."""
    return frozenset(words.split())


IRREGULAR_PLURALS = {
    "children": "child",
    "people": "person",
    "persons": "person",
    "mice": "mouse",
    "lice": "louse",
    "geese": "goose",
    "feet": "foot",
    "teeth": "tooth",
    "oxen": "ox",
    "dice": "die",
    "leaves": "leaf",
    "loaves": "loaf",
    "wolves": "wolf",
    "calves": "calf",
    "halves": "half",
    "elves": "elf",
    "shelves": "shelf",
    "thieves": "thief",
    "scarves": "scarf",
    "hooves": "hoof",
    "knives": "knife",
    "wives": "wife",
    "lives": "life",
    "cacti": "cactus",
    "fungi": "fungus",
    "octopi": "octopus",
    "indices": "index",
    "matrices": "matrix",
    "vertices": "vertex",
    "phenomena": "phenomenon",
    "criteria": "criterion",
    "bacteria": "bacterium",
}
# Same form in singular and plural.
INVARIANT_NOUNS = _set(
    "sheep deer reindeer fish moose bison elk swine salmon trout cod shrimp squid offspring aircraft "
    "spacecraft hovercraft watercraft samurai ninja series species debris"
)
# Singular nouns that end like a plural.
_SINGULAR_ENDINGS = ("ss", "us", "is", "ous")
_OE_NOUNS = _set("shoe toe canoe hoe oboe foe doe floe sloe horseshoe tiptoe")
_MEN_SINGULARS = frozenset({"omen", "amen", "semen", "specimen", "abdomen", "stamen", "regimen"})


def _lower(word: str) -> str:
    return word.strip().lower()


def singular_candidates(word: str) -> frozenset[str]:
    """Every form the word could have in the singular, the word itself included (lower case)."""
    w = _lower(word)
    forms = {w}
    if w in IRREGULAR_PLURALS:
        forms.add(IRREGULAR_PLURALS[w])
        return frozenset(forms)
    if w in INVARIANT_NOUNS:
        return frozenset(forms)
    if w.endswith("men") and w not in _MEN_SINGULARS:
        forms.add(w[:-3] + "man")
    if w.endswith("people"):
        forms.add(w[:-6] + "person")
    if len(w) > 3 and w.endswith("s") and not w.endswith(_SINGULAR_ENDINGS):
        forms.add(w[:-1])
        if w.endswith("es"):
            forms.add(w[:-2])
        if w.endswith("ies") and len(w) > 4:
            forms.add(w[:-3] + "y")
        if w.endswith("ves"):
            forms |= {w[:-3] + "f", w[:-3] + "fe"}
    return frozenset(forms)


def singular(word: str) -> str:
    """The most likely singular of a word (lower case); a singular word is returned as it is."""
    w = _lower(word)
    if w in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[w]
    if not looks_plural(w) or w in INVARIANT_NOUNS:
        return w
    if w.endswith("men"):
        return w[:-3] + "man"
    if w.endswith("people"):
        return w[:-6] + "person"
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(("sses", "uses", "xes", "zes", "ches", "shes")):
        return w[:-2]
    if w.endswith("oes") and w[:-1] not in _OE_NOUNS:
        return w[:-2]  # heroes -> hero, but shoes -> shoe
    return w[:-1]


def looks_plural(word: str) -> bool:
    """Whether a word can be a plural noun (invariant nouns count: "four sheep", "two fish")."""
    w = _lower(word)
    if w in IRREGULAR_PLURALS or w in INVARIANT_NOUNS:
        return True
    if w.endswith("men") and w not in _MEN_SINGULARS and len(w) >= 3:
        return True
    if w.endswith("people"):
        return True
    return len(w) > 2 and w.endswith("s") and not w.endswith(_SINGULAR_ENDINGS)


def same_noun(a: str, b: str) -> bool:
    """Whether two words are forms of one noun (cat/cats, box/boxes, child/children, sheep/sheep)."""
    return bool(singular_candidates(a) & singular_candidates(b))
