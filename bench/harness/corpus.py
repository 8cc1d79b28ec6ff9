"""A deterministic chat corpus: real English words drawn with a Zipf distribution.

The same seed gives the same messages on every machine, so search results and timings
can be compared across runs and backends.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from itertools import accumulate

# Common English content words, most frequent first (stop words left out: the search
# layer drops them on both backends).
VOCABULARY = """
time year people way day man thing woman life child world school state family student
group country problem hand part place case week company system program question work
government number night point home water room mother area money story fact month lot right
study book eye job word business issue side kind head house service friend father power hour
game line end member law car city community name president team minute idea kid body
information back parent face others level office door health person art war history party
result change morning reason research girl guy moment air teacher force education foot boy
age policy everything process music market sense nation plan college interest death
experience effect class control care field development role effort rate heart drug show
leader light voice wife police mind price report decision son view relationship town road
arm difference value building action model season society tax director position player
record paper space ground form event official matter center couple site project activity
star table need court oil situation cost industry figure street image phone data picture
practice piece land product doctor wall patient worker news test movie north love support
technology step baby computer type attention film tree source organization hair window
evidence population site agent search message config status deploy build release query
index memory cache server client request response error warning schedule task queue worker
pipeline token prompt context tool result summary review draft plan report metric alert
running runner runs ran jumped jumping quickly slowly happily writing written writes wrote
""".split()


def zipf_weights(n: int, s: float = 1.1) -> list[float]:
    return [1.0 / (rank ** s) for rank in range(1, n + 1)]


class Corpus:
    def __init__(self, seed: int = 42, vocabulary: list[str] | None = None) -> None:
        self.words = vocabulary or VOCABULARY
        self._cum = list(accumulate(zipf_weights(len(self.words))))
        self._rng = random.Random(seed)

    def message(self, min_words: int = 5, max_words: int = 25) -> str:
        k = self._rng.randint(min_words, max_words)
        return " ".join(self._rng.choices(self.words, cum_weights=self._cum, k=k))

    def messages(self, n: int) -> Iterator[str]:
        for _ in range(n):
            yield self.message()

    def query(self) -> str:
        """A search a user might type: one or two mid-frequency words."""
        words = self._rng.choices(self.words[5:120], k=self._rng.choice((1, 1, 2)))
        return " ".join(words)
