"""After inference: select or fuse whole answers of several models (or samples of one).

Strategies (composite ``strategy:`` names, registered in :data:`tutti.collab.STRATEGIES`): ``vote``
(majority vote / self-consistency), ``mbr`` (minimum Bayes risk with chrF, BLEU or MiniLM similarity),
``rank`` (pairwise judge with the position-swap check), ``fusion`` (mixture-of-agents; Self-MoA with one member)
and ``debate``. Proposer outputs are cached (:class:`ProposalCache`), so re-running with another aggregator
does not regenerate them. Python API::

    from tutti.aggregate import Vote, VoteOptions
    sc = Vote([model], VoteOptions(samples=5, temperature=0.7, extract="number"))
    sc.generate(["What is 17 + 25?"], params=SamplingParams(max_new_tokens=64))
"""

from tutti.aggregate.answers import EXTRACTORS, majority_vote
from tutti.aggregate.base import Candidate, PostHoc, propose
from tutti.aggregate.cache import ProposalCache
from tutti.aggregate.config import DebateOptions, FusionOptions, MBROptions, RankOptions, VoteOptions
from tutti.aggregate.debate import Debate
from tutti.aggregate.fusion import Fusion
from tutti.aggregate.mbr import MBR
from tutti.aggregate.rank import PairRank
from tutti.aggregate.similarity import MBR_UTILITIES, chrf, mbr_select, sentence_bleu
from tutti.aggregate.vote import Vote

__all__ = [
    "EXTRACTORS", "MBR", "MBR_UTILITIES", "Candidate", "Debate", "DebateOptions", "Fusion", "FusionOptions",
    "MBROptions", "PairRank", "PostHoc", "ProposalCache", "RankOptions", "Vote", "VoteOptions", "chrf",
    "majority_vote", "mbr_select", "propose", "sentence_bleu",
]
