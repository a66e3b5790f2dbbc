"""A generated knowledge corpus with labelled questions (retrieval quality tests and bench/knowledge.py).

Each document describes a few fictional places, one paragraph each, in the same sentence patterns (so the
common words say nothing); a question names one place and asks about one of its facts in other words, and
its right passage is the chunk holding that fact."""

from __future__ import annotations

import random
from dataclasses import dataclass

_SYLLABLE_TEXT = "ka lo mi ra tu ve zen dor fal gri hol jun kes lum mor nav pel quor sil tam"
_SYLLABLES = _SYLLABLE_TEXT.split()
_KINDS = ["harbour town", "mountain village", "river city", "desert oasis", "island port", "forest hamlet"]
_GOODS = ["amber", "copper", "saffron", "glassware", "wool", "salt", "timber", "silk", "pepper", "marble"]
_CRAFTS = ["clockmakers", "weavers", "potters", "shipwrights", "brewers", "bookbinders", "smiths", "dyers"]
_FEASTS = ["lantern", "harvest", "tide", "snow", "kite", "bell", "mask", "river"]


@dataclass(frozen=True)
class Fact:
    place: str
    question: str
    #: A phrase only the right passage contains.
    answer: str


def _name(rng: random.Random, used: set[str]) -> str:
    while True:
        name = "".join(rng.choice(_SYLLABLES) for _ in range(3)).capitalize()
        if name not in used:
            used.add(name)
            return name


def generate(
    documents: int = 10, places_per_document: int = 4, seed: int = 20
) -> tuple[list[str], list[Fact]]:
    """``documents`` texts and the labelled questions about them (two per place)."""
    rng = random.Random(seed)
    used: set[str] = set()
    texts: list[str] = []
    facts: list[Fact] = []
    for _ in range(documents):
        paragraphs = []
        for _ in range(places_per_document):
            place, founder = _name(rng, used), _name(rng, used)
            kind, good, craft, feast = (
                rng.choice(_KINDS),
                rng.choice(_GOODS),
                rng.choice(_CRAFTS),
                rng.choice(_FEASTS),
            )
            year = rng.randint(1100, 1900)
            paragraphs.append(
                f"{place} is a {kind} in the region of {founder}. It was founded in {year} by settlers "
                f"who traded {good} along the old roads. Today {place} is known for its {craft}, and every "
                f"spring the town holds the {feast} festival, when visitors from the whole region arrive. "
                f"The council of {place} meets in a hall built from local stone, and the market sells {good} "
                "every week."
            )
            facts.append(Fact(place, f"When was {place} founded?", f"founded in {year}"))
            facts.append(Fact(place, f"Which craft made {place} famous?", f"known for its {craft}"))
        texts.append("\n\n".join(paragraphs))
    return texts, facts
