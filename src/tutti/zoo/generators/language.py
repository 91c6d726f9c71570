"""Word tasks: letters of words, antonyms, review sentiment from lexicons, and true/false logic."""

from __future__ import annotations

import random
from functools import cache

from tutti.zoo.generators.tables import ANTONYMS, ASPECTS, NEGATIVE, POSITIVE, WORDS
from tutti.zoo.tasks import Example, entity_split, task

_SYLLABLES = ("ba", "ko", "ri", "mu", "te", "lo", "sa", "ni", "pe", "du", "ga", "vi", "zo", "fe", "ha", "ju",
              "ty", "qu", "wa", "xe", "ob", "ar", "el", "in", "um")
_ORDINALS = {1: "second", 2: "third"}


def _word(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(WORDS)
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))  # a pronounceable non-word


@task("string_ops", group="language")
def string_ops(rng: random.Random, split: str) -> Example:
    """First, second, third or last letter of a word, or its number of letters."""
    w = _word(rng)
    kind = rng.randrange(4)
    if kind == 0:
        return Example(f'What is the first letter of the word "{w}"? Answer with one letter.', w[0])
    if kind == 1:
        return Example(f'What is the last letter of the word "{w}"? Answer with one letter.', w[-1])
    if kind == 2:
        i = rng.choice((1, 2))
        return Example(f'What is the {_ORDINALS[i]} letter of the word "{w}"? Answer with one letter.', w[i])
    return Example(f'How many letters are in the word "{w}"? Answer with the number only.', str(len(w)))


@cache
def _directed_antonyms(split: str) -> tuple[tuple[str, str], ...]:
    pairs = [p for p in ANTONYMS if entity_split("antonym:" + "/".join(sorted(p))) == split]
    return tuple(pairs + [(b, a) for a, b in pairs])


@cache
def _others(cue: str) -> list[str]:
    return [w for p in ANTONYMS if cue not in p for w in p]


@task("antonyms", group="language")
def antonyms(rng: random.Random, split: str) -> Example:
    """Pick the opposite of a word among four (antonym pairs are split apart: test pairs are never trained)."""
    cue, ans = rng.choice(_directed_antonyms(split))
    others = _others(cue)
    choices = [ans, *rng.sample(others, 3)]
    rng.shuffle(choices)
    q = f'Which word is the opposite of "{cue}": {", ".join(choices[:3])} or {choices[3]}? Answer with one word.'
    return Example(q, ans, tuple(choices))


@task("sentiment", group="language")
def sentiment(rng: random.Random, split: str) -> Example:
    """Is a three-clause review (with negations) positive or negative overall (the majority of its clauses)."""
    aspects = rng.sample(ASPECTS, 3)
    clauses, score = [], 0
    for a in aspects:
        positive = rng.random() < 0.5
        negated = rng.random() < 0.3
        adj = rng.choice(POSITIVE if positive else NEGATIVE)
        clauses.append(f"the {a} was {'not ' if negated else ''}{adj}")
        score += 1 if positive != negated else -1
    review = f"{clauses[0].capitalize()}, {clauses[1]} and {clauses[2]}."
    ans = "positive" if score > 0 else "negative"
    q = f'Review: "{review}" Is this review positive or negative? Answer with one word.'
    return Example(q, ans, ("positive", "negative"))


def _bool_expr(rng: random.Random, depth: int) -> tuple[str, bool]:
    """A random expression with ``depth`` operators, parenthesised so that Python's precedence agrees."""
    if depth == 0:
        v = rng.random() < 0.5
        return (f"not {v}", not v) if rng.random() < 0.3 else (str(v), v)
    left, lv = _bool_expr(rng, depth - 1)
    if depth > 1:
        left = f"({left})"
    right, rv = _bool_expr(rng, 0)
    if rng.random() < 0.5:
        return f"{left} and {right}", lv and rv
    return f"{left} or {right}", lv or rv


@task("logic", group="reasoning")
def logic(rng: random.Random, split: str) -> Example:
    """Evaluate a Boolean expression of two to four literals; the answer is true or false."""
    expr, val = _bool_expr(rng, rng.randint(1, 3))
    q = f"Is this expression true or false: {expr}? Answer with true or false."
    return Example(q, "true" if val else "false", ("true", "false"))
