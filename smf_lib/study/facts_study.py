"""The new-facts study: facts arrive one at a time; SMF against LoRA and full finetuning, all from one start.

``python -m smf_lib run --preset facts`` (``facts-smoke``: a tiny random model, under a minute) retrofits the
starting memory once (a recipe of the spread pilot, :mod:`smf_lib.study.spread_pilot`), then for every arm, rate and
seed trains on a stream of invented facts (:mod:`smf_lib.facts`: each fact for ``steps_per_fact`` steps on a batch
of its own phrasings, no replay) and measures, against the starting model on the same items:

- learning: exact match and the answer's log-likelihood on every fact's held-out questions (and on the first
  ``first_facts``: did later facts overwrite them?);
- forgetting: held-out chat replies' log-likelihood, WikiText perplexity (per window), the TriviaQA gold answer's
  log-likelihood and the MedMCQA gold margin, each per item for paired intervals.

Rates are swept on the dev facts (``split="dev"``: other facts, other probe items); the reported facts and items
are scored only by runs at rates chosen there. One JSON per run under ``out/runs/``, written atomically; finished
runs are read back and a rerun does only what is missing. Every record names the code it ran from.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import torch

from .. import data
from ..adapter import load_memory
from ..facts import arrival_order, fact_order, facts_probe, make_facts
from ..files import check_clean, git_state, plain as _plain, read_json, write_json
from ..models import load_named as load
from ..probes import chat_items, continuation_logprobs, medmcqa_accuracy, perplexity, span_logliks
from ..selection import BackgroundStats, compute_background_stats
from ..training import TrainConfig, TrainingDiverged, train
from .facts_presets import FACT_ARMS, FACT_PRESETS, FactsPreset, get_facts_preset  # noqa: F401 (re-exported)
from .spread_pilot import SpreadSettings, recipe_identity, run_recipe
from .stages import REMAKE_TOLERANCE, loss_gap

def facts_of(p: FactsPreset, split: str):
    """The facts of a split: reported (seed 0) or dev (seed 1), never sharing an entity."""
    facts = make_facts(p.n_facts if split == "report" else p.dev_facts, seed=0 if split == "report" else 1)
    return facts


def probe_items(p: FactsPreset, tok, split: str) -> dict:
    """The forgetting probes' items of a split: the report items first in each file, the dev items after them."""
    def part(rows, n):
        return rows[:n] if split == "report" else rows[n:2 * n]

    pairs = data.load_oasst1_pairs(root=p.data, pool="all")
    lines = data.load_wikitext_lines(2 * p.wikitext_lines, p.data)
    trivia = data.load_triviaqa(2 * p.triviaqa_n, p.data)
    med = data.load_medmcqa("validation", 2 * p.medmcqa_n, root=p.data)
    return {"chat": chat_items(tok, part(pairs, p.chat_n)), "wikitext": "\n\n".join(part(lines, p.wikitext_lines)),
            "triviaqa": part(trivia, p.triviaqa_n), "medmcqa": part(med, p.medmcqa_n)}


@torch.no_grad()
def score(model, tok, facts, items: dict, first: int) -> dict:
    """Every measure of one model, per item."""
    f = facts_probe(model, tok, facts)
    ppl = perplexity(model, tok, items["wikitext"], max_length=256, stride=128, progress=False)
    trivia = [float(lp.mean()) for lp in continuation_logprobs(
        model, [tok(data.triviaqa_prompt(r), add_special_tokens=False).input_ids for r in items["triviaqa"]],
        [tok(" " + r["aliases"][0], add_special_tokens=False).input_ids for r in items["triviaqa"]])]
    med = medmcqa_accuracy(model, tok, items["medmcqa"], progress=False)
    firsts = {i.index for i in facts[:first]}
    return {"facts_em": [i["em"] for i in f["items"]], "facts_loglik": [i["answer_loglik"] for i in f["items"]],
            "first_facts_loglik": [i["answer_loglik"] for i in f["items"] if i["fact"] in firsts],
            "first_facts_em": [i["em"] for i in f["items"] if i["fact"] in firsts],
            "chat_loglik": span_logliks(model, items["chat"]),
            "wikitext_nll": [w["nll"] / w["tokens"] for w in ppl["windows"]],
            "triviaqa_gold_loglik": trivia, "medmcqa_gold_margin": [i["gold_margin"] for i in med["items"]]}


def _paired(before: dict, after: dict) -> dict:
    """Mean change per measure with a paired-bootstrap 95% interval over items."""
    import numpy as np

    out = {}
    for k in before:
        d = np.asarray(after[k], dtype=float) - np.asarray(before[k], dtype=float)
        if not len(d):
            continue
        boot = d[np.random.default_rng(0).integers(0, len(d), (2000, len(d)))].mean(axis=1)
        out[k] = {"delta": float(d.mean()), "lo": float(np.percentile(boot, 2.5)),
                  "hi": float(np.percentile(boot, 97.5)), "n": int(len(d))}
    return out


#: Preset fields that plan the study (which rates and seeds run) but do not change any one run; and those that
#: only the reported facts read (a dev run's facts and probes do not depend on them).
PLAN_FIELDS = ("rates", "seeds", "dev_seeds")
REPORT_FIELDS = ("n_facts",)


def same_run(stored: dict | None, current: dict) -> bool:
    """Whether a stored run identity describes the run ``current`` does: the same in everything but the preset's
    plan (``PLAN_FIELDS``), so adding a rate to one arm keeps every finished run."""
    def run_only(ident):
        skip = PLAN_FIELDS + (REPORT_FIELDS if ident.get("split") == "dev" else ())
        return {**ident, "preset": {k: v for k, v in ident.get("preset", {}).items() if k not in skip}}

    return stored is not None and run_only(stored) == run_only(current)


class FactsRunner:
    """Runs a :class:`~smf_lib.study.facts_presets.FactsPreset` into ``out`` (resumable; finished runs are read
    back). The code is read when it starts; a preset on the real data refuses a checkout with uncommitted changes
    unless ``allow_dirty``."""

    def __init__(self, preset: FactsPreset, out: str | Path, progress: bool = True, allow_dirty: bool = False):
        self.p, self.out, self.progress = preset, Path(out), progress
        self.code = git_state(Path(__file__).parent)
        if not preset.model.startswith("tiny"):
            self.code = check_clean(self.code, allow_dirty, f"facts preset {preset.name!r}")
        self.start_recipe = preset.start["recipe"]

    def start_settings(self) -> SpreadSettings:
        fields = {"data": self.p.data, "model": self.p.model, **self.p.start.get("settings", {})}
        return SpreadSettings(**fields)

    def starting_model(self):
        """The retrofitted model every arm starts from (retrofitted once, by the spread pilot's recipe, or copied
        from the spread pilot's folder where it made the same one)."""
        self._copy_start()
        self._make_start_again()
        run_recipe(self.start_recipe, self.out / "start", self.start_settings(), progress=self.progress)
        model, tok = load(self.p.model)
        load_memory(model, self.out / "start" / "artifacts" / self.start_recipe / "final")
        return model, tok

    def _copy_start(self) -> None:
        """Copy the starting memory from ``start["reuse"]`` when that folder holds the same recipe made with the same
        settings (:func:`~smf_lib.study.spread_pilot.recipe_identity`) and this study has none yet."""
        source = self.p.start.get("reuse")
        name, here = self.start_recipe, self.out / "start"
        if not source or (here / f"{name}.json").exists():
            return
        record, memory = Path(source) / f"{name}.json", Path(source) / "artifacts" / name / "final"
        if not record.exists() or not memory.exists():
            return
        if read_json(record).get("identity") != recipe_identity(name, self.start_settings()):
            return
        shutil.copytree(memory, here / "artifacts" / name / "final", dirs_exist_ok=True)
        shutil.copy2(record, here / f"{name}.json")  # the record last: it marks the start as complete

    def _make_start_again(self) -> None:
        """Where the start's record is here but its memory is not (a fresh clone keeps records, not weights), make
        the memory again in a scratch folder and keep it only if its retrofit trains as the record says: the loss
        within ``REMAKE_TOLERANCE`` nats of the recorded one at every step (CPU kernels need not repeat a sum bit for
        bit). Otherwise refuse, so that no later run starts from another model. ``start/made-again.json`` lists each
        remake (what it differed by, and the code); the runs made on it name it and how far its scores lie from
        the recorded start's (:meth:`start_note`)."""
        name, here = self.start_recipe, self.out / "start"
        record = here / f"{name}.json"
        if not record.exists() or (here / "artifacts" / name / "final").exists():
            return
        again = here / "again"
        made, recorded = run_recipe(name, again, self.start_settings(), progress=self.progress), read_json(record)
        gap = loss_gap(recorded.get("loss_log") or [], made.get("loss_log") or [])
        if gap is None or gap > REMAKE_TOLERANCE:
            raise RuntimeError(
                f"the starting memory made again in {again} trained differently from the one {record} records (its "
                f"loss differs {'in length' if gap is None else f'by up to {gap:.2g} nats'} along the retrofit, "
                f"more than {REMAKE_TOLERANCE:g}). The "
                "finished runs started from the recorded one; rerun with the code and torch version they name, or "
                "start this study in a new --out")
        (here / "artifacts" / name).mkdir(parents=True, exist_ok=True)
        (again / "artifacts" / name / "final").replace(here / "artifacts" / name / "final")
        shutil.rmtree(again)
        log = here / "made-again.json"
        remakes = read_json(log)["remakes"] if log.exists() else []
        write_json(log, {"remakes": [*remakes, {"max_loss_difference": gap, "tolerance": REMAKE_TOLERANCE,
                                                "code": made.get("code"), "offsets": {}}]})

    def start_note(self, split: str, model=None, tok=None) -> dict | None:
        """For a run made on a remade start (the start's memory made again on a new checkout): that remake, with the
        mean difference of its scores from the recorded start's on ``split``, per measure (computed once per remake
        and split, on ``model`` when given: the starting model a run has loaded and not yet trained)."""
        log = self.out / "start" / "made-again.json"
        if not log.exists():
            return None
        held = read_json(log)
        last = held["remakes"][-1]
        if split not in last["offsets"]:
            import numpy as np

            if model is None:
                model, tok = self.starting_model()
            now = score(model, tok, facts_of(self.p, split), probe_items(self.p, tok, split), self.p.first_facts)
            was = self.baseline(split)
            last["offsets"][split] = {k: float(np.mean(now[k]) - np.mean(was[k])) for k in was if len(was[k])}
            write_json(log, held)
        return {"made_again": len(held["remakes"]), **last, "offsets": last["offsets"][split]}

    def background(self, model, tok) -> BackgroundStats:
        """The starting model's background statistics (computed once; checked against the model when read)."""
        path = self.out / "start" / "background.safetensors"
        if path.exists():
            return BackgroundStats.load(path, model)
        stats = compute_background_stats(model, tok, data.load_background(self.p.background_n, self.p.data),
                                         max_length=256, progress=self.progress)
        stats.save(path)
        return stats

    def baseline(self, split: str) -> dict:
        """The starting model's scores on a split (computed once)."""
        path = self.out / f"start-{split}.json"
        if path.exists():
            return read_json(path)["scores"]
        model, tok = self.starting_model()
        scores = score(model, tok, facts_of(self.p, split), probe_items(self.p, tok, split), self.p.first_facts)
        write_json(path, {"split": split, "scores": scores})
        return scores

    def run(self, arm: str, lr: float, seed: int, split: str) -> dict | None:
        """One arm at one rate and seed on one split's stream; None where its training diverged (recorded under
        ``out/failed``, and not rerun with the same settings)."""
        name = f"{arm}-lr{lr:g}-s{seed}-{split}"
        path = self.out / "runs" / f"{name}.json"
        config = TrainConfig(**FACT_ARMS[arm], lr=lr, seed=seed, micro_batch=16, grad_accum=1,
                             max_length=self.p.max_length, warmup_steps=0, schedule="constant", top_t=self.p.top_t,
                             checkpoint_every=100)
        identity = _plain({"preset": dataclasses.asdict(self.p), "arm": arm, "split": split,
                           "train_config": config.record(),
                           # seed 0 trains on the stream as built; another seed on its own arrival order
                           **({"arrival": "first facts kept, the rest shuffled by the seed"} if seed else {})})
        if path.exists():
            rec = read_json(path)
            if same_run(rec.get("identity"), identity):
                return rec
            raise ValueError(f"{path} was made with other settings: delete it to rerun, or use another --out")
        failed = self.out / "failed" / f"{name}.json"
        if failed.exists() and same_run(read_json(failed).get("identity"), identity):
            return None  # it diverged with these settings: a measured outcome, not rerun
        code, t0 = self.code, time.perf_counter()
        before = self.baseline(split)
        model, tok = self.starting_model()
        facts = facts_of(self.p, split)
        texts, order = fact_order(arrival_order(facts, seed, self.p.first_facts), self.p.steps_per_fact)
        background = self.background(model, tok) if config.method == "smf" else None
        remade = self.start_note(split, model, tok)  # before training: the model is still the start
        try:
            res = train(model, tok, texts, config, background=background, progress=self.progress, order=order,
                        checkpoint_dir=self.out / "artifacts" / name)
        except TrainingDiverged as err:  # recorded and skipped; the sweep goes on
            write_json(failed, {"identity": identity, "run": name, "arm": arm, "lr": lr, "seed": seed, "split": split,
                                "code": code, "error": str(err)})
            print(f"{name} diverged ({err}); recorded in {failed}", flush=True)
            return None
        after = score(res.model, tok, facts, probe_items(self.p, tok, split), self.p.first_facts)
        rec = {"identity": identity, "run": name, "arm": arm, "lr": lr, "seed": seed, "split": split, "code": code,
               "changes": _paired(before, after), "scores": after, "train_seconds": res.seconds,
               "seconds": time.perf_counter() - t0 + (res.resumed or {}).get("earlier_seconds", 0.0),
               "resumed": res.resumed, "facts": len(facts), "steps": len(order),
               **({"start_made_again": remade} if remade else {})}
        write_json(path, rec)
        shutil.rmtree(self.out / "artifacts" / name, ignore_errors=True)  # its checkpoint: the record is the result
        return rec

    def fact_rows(self, split: str = "dev", n: int = 8, layer: int | None = None) -> Path:
        """Write (or keep) ``out/fact_rows.json``: for one memory layer (the middle one unless ``layer``), the read
        counts of the first ``n`` facts' training batches (sparse: row -> reads), the starting model's background
        statistics (``df``, ``totals``, ``n_docs``) and ``top_t``, so that a reader can see which rows a fact reads,
        which rows SMF would train and how much general text reads them. Returns its path."""
        from ..memory import memory_layers
        from ..selection import read_counts_of_texts

        path = self.out / "fact_rows.json"
        identity = _plain({"start": read_json(self.out / "start" / f"{self.start_recipe}.json").get("identity")
                           if (self.out / "start" / f"{self.start_recipe}.json").exists() else None,
                           "split": split, "n": n, "layer": layer, "max_length": self.p.max_length,
                           "background_n": self.p.background_n})
        if path.exists() and read_json(path).get("identity") == identity and identity["start"] is not None:
            return path
        model, tok = self.starting_model()
        identity["start"] = read_json(self.out / "start" / f"{self.start_recipe}.json").get("identity")
        stats = self.background(model, tok)
        layers = [m.layer_idx for m in memory_layers(model)]
        k = layers.index(layer) if layer is not None else len(layers) // 2
        facts = facts_of(self.p, split)[:n]
        batches = []
        for f in facts:
            counts = read_counts_of_texts(model, tok, list(f.statements), self.p.max_length)[k]
            rows = counts.nonzero().flatten()
            batches.append({"fact": f.index, "entity": f.entity, "answer": f.answer, "statement": f.statements[0],
                            "rows": rows.tolist(), "reads": counts[rows].tolist()})
        write_json(path, {"identity": identity, "layer": layers[k], "n_slots": int(stats.df.shape[1]),
                          "n_docs": stats.n_docs, "top_t": self.p.top_t, "df": stats.df[k].tolist(),
                          "totals": stats.totals[k].tolist(), "facts": batches})
        return path

    def run_all(self, split: str = "dev") -> list[dict]:
        """Every arm, rate and seed of the preset on ``split``, all of the first seed first (so that a sweep cut
        short still holds one whole frontier), then on the reported facts the rates
        :func:`~smf_lib.study.facts_frontier.bracket_rates` adds; first the rows snapshot of the first dev facts (the
        chapter's running example, the same whichever split runs)."""
        self.fact_rows("dev")
        rates = self.p.rates if split == "dev" else self.report_rates()
        records = self._run_rates(rates, split)
        if split == "report":
            from .facts_frontier import bracket_rates

            added = bracket_rates(self.p, self.out)
            if added is None:
                print("no rate added to the reported facts: a planned reported run is missing (see python -m smf_lib "
                      f"status --preset {self.p.name})", flush=True)
            records += self._run_rates(added or {}, split)
        return [r for r in records if r is not None]

    def _run_rates(self, rates: dict, split: str) -> list[dict | None]:
        seeds = self.p.dev_seeds if split == "dev" else self.p.seeds
        return [self.run(arm, lr, seed, split) for seed in seeds for arm, arm_rates in rates.items()
                for lr in arm_rates]

    def report_rates(self) -> dict[str, tuple[float, ...]]:
        """The rates the reported facts run at, chosen on the dev facts only
        (:func:`~smf_lib.study.facts_frontier.report_plan`): per arm, the dev rates around the first crossing of
        the level every compared arm reaches. Refuses while a dev run is missing or the arms share no level."""
        from .facts_frontier import report_plan

        return report_plan(self.p, self.out)["rates"]
