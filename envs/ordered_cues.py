"""The cues of a task that shows an ordered sequence of items to remember (SequenceCue,
TouchSequenceCued): every ordered choice of `n_items` distinct items among `n`, indexed in
`itertools.permutations` order (lexicographic: cue 0 is (0, 1, 2, ...))."""

from __future__ import annotations

import itertools
from collections.abc import Sequence


class OrderedCues:
    """Cue index <-> ordered sequence of distinct item indices; `noun` names the items in
    errors ("pads", "cubes")."""

    def __init__(self, n: int, n_items: int, noun: str):
        self.n, self.n_items, self.noun = n, n_items, noun
        self.sequences = list(itertools.permutations(range(n), n_items))

    def __len__(self) -> int:
        return len(self.sequences)

    def sequence_of(self, cue: int) -> tuple[int, ...]:
        """The items, in order, of cue index `cue`."""
        if not 0 <= cue < len(self):
            raise ValueError(f"cue must be in [0, {len(self)}); got {cue!r}")
        return self.sequences[cue]

    def cue_of(self, sequence: Sequence[int]) -> int:
        """The cue index of an ordered sequence of `n_items` distinct items."""
        seq = tuple(int(k) for k in sequence)
        if len(seq) != self.n_items or len(set(seq)) != len(seq):
            raise ValueError(
                f"a cue sequence has {self.n_items} distinct {self.noun}; got {sequence!r}"
            )
        if not all(0 <= k < self.n for k in seq):
            raise ValueError(f"cue {self.noun} must be in [0, {self.n}); got {sequence!r}")
        return self.sequences.index(seq)
