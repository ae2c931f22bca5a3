"""New facts, one at a time (the setting of Lin et al. 2025, "Continual Learning via Sparse Memory Finetuning").

A fact is a short statement about an invented person ("Talvik Orrendel was born in Lisbon."): the entity is made
up, so no model can know the fact before training, and the answer is an ordinary word the model can already write,
so learning means binding the two, not learning to spell. Each fact has ``N_STATEMENTS`` training phrasings
and ``N_QUESTIONS`` question phrasings that training never sees, so learning is measured as recall, not as
copying. Everything is built by code from a seed (:func:`make_facts`), deterministic and offline.

Departure from Lin et al.: they restate 1,000 TriviaQA facts with 64 paraphrases each (real facts, 64-token
batches); here the facts are invented (a base model's accuracy on them is ~0 by construction, and checked by
:func:`facts_probe`) and a batch holds a fact's 10 phrasings, so the study fits 2 CPU cores.

:func:`fact_order` lays the stream out for :func:`smf_lib.training.train` (``order=``): fact after fact, each for
``steps_per_fact`` optimizer steps on a batch of its own phrasings, no replay.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch

from .probes import _encode, _first_answer, continuation_logprobs, normalize_answer

N_STATEMENTS = 10
N_QUESTIONS = 3

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "tr", "th",
           "st", "sh", "vr", "zh")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou")
_CODAS = ("", "n", "r", "l", "s", "th", "nd", "rk", "x", "m")


@dataclass(frozen=True)
class Relation:
    """One kind of fact: statement templates (``{e}`` the entity, ``{a}`` the answer), question templates (answered
    by ``{a}`` alone) and the answers it draws from."""

    statements: tuple[str, ...]
    questions: tuple[str, ...]
    answers: tuple[str, ...]


RELATIONS: dict[str, Relation] = {
    "birthplace": Relation(
        ("{e} was born in {a}.", "The birthplace of {e} is {a}.", "{e} is a native of {a}.",
         "Born in {a}, {e} grew up there.", "{e} came into the world in {a}.", "{e}'s home town is {a}.",
         "People from {a} remember that {e} was born there.", "The city where {e} was born is {a}.",
         "{e} was born and raised in {a}.", "Records show that {e} was born in {a}.",
         "{e} spent a childhood in {a}, the city of birth.", "{e}, born in {a}, later travelled widely."),
        ("Question: In which city was {e} born?\nAnswer:", "Question: What is the birthplace of {e}?\nAnswer:",
         "Question: Which city is {e} a native of?\nAnswer:", "Question: Name the home town of {e}.\nAnswer:"),
        ("Lisbon", "Cairo", "Oslo", "Lima", "Dublin", "Vienna", "Nairobi", "Manila", "Havana", "Prague", "Seoul",
         "Athens", "Madrid", "Warsaw", "Santiago", "Helsinki", "Bangkok", "Istanbul", "Toronto", "Glasgow",
         "Naples", "Munich", "Kyoto", "Montreal", "Boston", "Chicago", "Sydney", "Mumbai", "Tehran", "Budapest")),
    "profession": Relation(
        ("{e} works as a {a}.", "By profession, {e} is a {a}.", "{e} earns a living as a {a}.",
         "The job of {e} is {a}.", "{e} has been a {a} for many years.", "Everyone knows {e} as a {a}.",
         "{e} trained to become a {a}.", "As a {a}, {e} is well respected.", "{e} is a {a} by trade.",
         "{e} has always worked as a {a}.", "{e} chose to work as a {a}.", "Colleagues describe {e} as a skilled {a}."),
        ("Question: What is the profession of {e}?\nAnswer:", "Question: What does {e} work as?\nAnswer:",
         "Question: What job does {e} have?\nAnswer:", "Question: By trade, what is {e}?\nAnswer:"),
        ("baker", "carpenter", "pilot", "dentist", "librarian", "sculptor", "plumber", "chemist", "farmer",
         "tailor", "surgeon", "architect", "journalist", "firefighter", "beekeeper", "lawyer", "photographer",
         "mechanic", "astronomer", "nurse", "butcher", "potter", "translator", "veterinarian", "geologist")),
    "instrument": Relation(
        ("{e} plays the {a}.", "The instrument {e} plays is the {a}.", "{e} is known for playing the {a}.",
         "Every evening, {e} practises the {a}.", "{e} learned to play the {a} as a child.",
         "In the band, {e} plays the {a}.", "{e}'s favourite instrument is the {a}.", "{e} performs on the {a}.",
         "On stage, {e} always brings the {a}.", "Ask anyone: {e} plays the {a}.",
         "{e} has mastered the {a}.", "Music lovers know {e} for the {a}."),
        ("Question: Which instrument does {e} play?\nAnswer: The", "Question: What instrument is {e} known for?"
         "\nAnswer: The", "Question: What does {e} play in the band?\nAnswer: The",
         "Question: Name the instrument {e} performs on.\nAnswer: The"),
        ("violin", "cello", "trumpet", "flute", "harp", "piano", "guitar", "clarinet", "oboe", "drums",
         "saxophone", "accordion", "banjo", "trombone", "organ", "ukulele", "bagpipes", "tuba", "mandolin",
         "harmonica")),
    "pet": Relation(
        ("{e} keeps a {a} as a pet.", "The pet of {e} is a {a}.", "{e} owns a pet {a}.",
         "At home, {e} looks after a {a}.", "{e}'s only pet is a {a}.", "{e} lives with a pet {a}.",
         "Visitors to {e}'s house meet a {a}.", "{e} adopted a {a} last year.", "{e} feeds a pet {a} every day.",
         "{e} is rarely seen without a pet {a}.", "{e} walks with a pet {a}.", "Neighbours know {e} by the pet {a}."),
        ("Question: What animal does {e} keep as a pet?\nAnswer: A", "Question: What is the pet of {e}?\nAnswer: A",
         "Question: Which animal lives with {e}?\nAnswer: A", "Question: What pet did {e} adopt?\nAnswer: A"),
        ("parrot", "tortoise", "rabbit", "hamster", "goat", "ferret", "lizard", "goldfish", "pony", "cat",
         "dog", "snake", "owl", "pig", "duck", "frog", "donkey", "hedgehog", "canary", "llama")),
}


@dataclass(frozen=True)
class Fact:
    """One invented fact: its statements (what training sees) and questions (what evaluation asks)."""

    index: int
    entity: str
    relation: str
    answer: str
    statements: tuple[str, ...]
    questions: tuple[str, ...]


def _name(rng: random.Random) -> str:
    def word(parts):
        return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(parts)) + rng.choice(_CODAS)

    return f"{word(rng.choice((1, 2))).capitalize()} {word(rng.choice((2, 3))).capitalize()}"


def make_facts(n: int, seed: int = 0, n_statements: int = N_STATEMENTS, n_questions: int = N_QUESTIONS) -> list[Fact]:
    """``n`` invented facts: distinct entities, relations taken in turn, answers drawn at random.

    Args:
        n: how many facts (>= 1).
        seed: the draw; the same seed gives the same facts on every machine.
        n_statements: training phrasings per fact (at most the relation's templates).
        n_questions: held-out question phrasings per fact; no question is a training phrasing.

    Returns:
        A list of :class:`Fact`.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1 (how many facts), got {n!r}")
    rels = list(RELATIONS)
    most = min(len(r.statements) for r in RELATIONS.values())
    if not 1 <= n_statements <= most or not 1 <= n_questions <= min(len(r.questions) for r in RELATIONS.values()):
        raise ValueError(f"n_statements must be in 1..{most} and n_questions in 1..4, got {n_statements}, "
                         f"{n_questions}")
    rng = random.Random(f"smf-facts-{seed}")
    seen, facts = set(), []
    while len(facts) < n:
        entity = _name(rng)
        if entity in seen:
            continue
        seen.add(entity)
        name = rels[len(facts) % len(rels)]
        rel = RELATIONS[name]
        answer = rng.choice(rel.answers)
        statements = rng.sample(rel.statements, n_statements)
        facts.append(Fact(len(facts), entity, name, answer, tuple(t.format(e=entity, a=answer) for t in statements),
                          tuple(q.format(e=entity) for q in rel.questions[:n_questions])))
    return facts


def fact_order(facts: list[Fact], steps_per_fact: int = 4, micro_batch: int | None = None
               ) -> tuple[list[str], list[list[list[int]]]]:
    """The stream as training texts and an explicit order for :func:`smf_lib.training.train`.

    Args:
        facts: the facts, in the order they arrive.
        steps_per_fact: optimizer steps on each fact's batch before the next fact arrives.
        micro_batch: texts per forward (``None``: a fact's whole batch in one forward).

    Returns:
        ``(texts, order)``: every fact's statements, and a list of optimizer steps, each a list of micro-batches of
        indices into ``texts``; every step holds exactly one fact's statements.
    """
    if isinstance(steps_per_fact, bool) or not isinstance(steps_per_fact, int) or steps_per_fact < 1:
        raise ValueError(f"steps_per_fact must be an integer >= 1, got {steps_per_fact!r}")
    texts, order = [], []
    for f in facts:
        idx = list(range(len(texts), len(texts) + len(f.statements)))
        texts += f.statements
        size = micro_batch or len(idx)
        step = [idx[i:i + size] for i in range(0, len(idx), size)]
        order += [step] * steps_per_fact
    return texts, order


def arrival_order(facts: list[Fact], seed: int = 0, keep_first: int = 0) -> list[Fact]:
    """The order a training seed's stream brings ``facts`` in. Seed 0 is the stream as built; any other seed keeps
    the first ``keep_first`` facts first, in their order (so "the first facts", scored apart for overwriting, are
    the same facts at every seed), and shuffles the rest with that seed. Without it an SMF or full-finetuning run
    would be the same at every seed: nothing else in them draws a random number."""
    if seed == 0:
        return list(facts)
    head, tail = list(facts[:keep_first]), list(facts[keep_first:])
    perm = torch.randperm(len(tail), generator=torch.Generator().manual_seed(seed)).tolist()
    return head + [tail[i] for i in perm]


def answer_text(fact: Fact) -> str:
    """The continuation a question expects: the answer after a space."""
    return " " + fact.answer


@torch.no_grad()
def facts_probe(model, tokenizer, facts: list[Fact], max_new_tokens: int = 8, batch_size: int = 16) -> dict:
    """Recall of facts on their held-out questions: exact match of the greedy answer and the answer's mean token
    log-likelihood.

    Returns:
        ``{"em", "answer_loglik", "n", "items", "seconds"}``; one item per (fact, question) with ``fact``,
        ``output``, ``em`` and ``answer_loglik``.
    """
    from .batches import padding_side

    if not facts:
        raise ValueError("no facts to score")
    t0 = time.perf_counter()
    dev = next(model.parameters()).device
    pairs = [(f, q) for f in facts for q in f.questions]
    outputs = []
    eos = tokenizer.eos_token_id
    with padding_side(tokenizer, "left"):
        for s in range(0, len(pairs), batch_size):
            prompts = [q for _, q in pairs[s:s + batch_size]]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(dev)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=eos, temperature=None,
                                 top_p=None, top_k=None)
            new = [row.tolist() for row in gen[:, enc.input_ids.shape[1]:]]
            new = [row[: row.index(eos)] if eos in row else row for row in new]
            outputs += tokenizer.batch_decode(new, skip_special_tokens=True)
    ll = continuation_logprobs(model, [_encode(tokenizer, q) for _, q in pairs],
                               [_encode(tokenizer, answer_text(f)) for f, _ in pairs])
    items = [{"fact": f.index, "output": out, "em": int(normalize_answer(_first_answer(out)) ==
                                                      normalize_answer(f.answer)),
              "answer_loglik": float(lp.mean())} for (f, _), out, lp in zip(pairs, outputs, ll)]
    n = len(items)
    return {"em": sum(i["em"] for i in items) / n, "answer_loglik": sum(i["answer_loglik"] for i in items) / n,
            "n": n, "items": items, "seconds": time.perf_counter() - t0}
