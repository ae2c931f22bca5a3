import gzip
import json
import os

import pytest

from smf_lib import data as D
from smf_lib.study.evaluation import data_root

FIXTURES = data_root(type("P", (), {"data": "fixtures"}))

REAL = os.environ.get("SMF_DATA_DIR")


def test_fixture_loaders():
    train = D.load_medmcqa("train", root=FIXTURES)
    val = D.load_medmcqa("validation", n=5, root=FIXTURES)
    assert len(train) == 24 and len(val) == 5 and {"opa", "cop"} <= set(val[0])
    assert len(D.load_triviaqa(3, FIXTURES)) == 3
    assert D.load_triviaqa(1, FIXTURES)[0]["aliases"][0] == "Paris"
    assert len(D.load_oasst1_replies("validation", root=FIXTURES)) == 10
    assert len(D.load_oasst1_replies("train", root=FIXTURES)) == 10
    lines = D.load_wikitext_lines(4, FIXTURES)
    assert lines[0] == "= Section 0 =" and all(s == s.strip() and s for s in lines)
    assert D.wikitext_text(2, FIXTURES) == lines[0] + "\n\n" + lines[1]


def test_prompt_and_training_text_exact():
    row = {"question": "Q?", "opa": "a1", "opb": "b1", "opc": "c1", "opd": "d1", "cop": 2, "exp": "because"}
    prompt = "Medical exam question:\nQuestion: Q?\nA. a1\nB. b1\nC. c1\nD. d1\nAnswer:"
    assert D.medmcqa_prompt(row) == prompt
    assert D.medmcqa_options(row) == [" A. a1", " B. b1", " C. c1", " D. d1"]
    assert D.medmcqa_training_text(row) == prompt + " C. c1\nExplanation: because"
    assert D.medmcqa_training_text({**row, "exp": None}) == prompt + " C. c1"
    assert D.triviaqa_prompt({"question": "Who?"}) == "Question: Who?\nAnswer:"


def test_single_choice_filter(tmp_path):
    (tmp_path / "medmcqa").mkdir()
    rows = [{"question": "q", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 0, "choice_type": t}
            for t in ("single", "multi", None)]
    (tmp_path / "medmcqa" / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(D.load_medmcqa(root=tmp_path)) == 2
    assert len(D.load_medmcqa(root=tmp_path, single_choice=False)) == 3


def test_missing_file_names_file_and_remedy(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no medmcqa/train.jsonl in .*SMF_DATA_DIR"):
        D.load_medmcqa("train", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.load_triviaqa(root=tmp_path / "nope")


def test_malformed_rows_name_file_and_line(tmp_path):
    (tmp_path / "medmcqa").mkdir()
    f = tmp_path / "medmcqa" / "train.jsonl"
    good = {"question": "q", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 1}
    f.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"train.jsonl:2: not valid JSON"):
        D.load_medmcqa("train", root=tmp_path)
    f.write_text(json.dumps(good) + "\n" + json.dumps({**good, "opc": None}) + "\n")
    with pytest.raises(ValueError, match=r"train.jsonl:2: missing field\(s\) \['opc'\]"):
        D.load_medmcqa("train", root=tmp_path)
    f.write_text(json.dumps({**good, "cop": 7}) + "\n")
    with pytest.raises(ValueError, match=r"train.jsonl:1: cop must be an integer 0-3"):
        D.load_medmcqa("train", root=tmp_path)
    f.write_text(json.dumps(good) + "\n" + json.dumps({**good, "cop": 2.9}) + "\n")
    with pytest.raises(ValueError, match=r"train.jsonl:2: cop must be an integer 0-3 .*got 2.9"):
        D.load_medmcqa("train", root=tmp_path)
    bad = json.dumps({**good, "question": "caf"}).encode().replace(b"caf", b"caf\xe9")
    f.write_bytes(json.dumps(good).encode() + b"\n" + bad + b"\n")
    with pytest.raises(ValueError, match=r"train.jsonl:2: not UTF-8"):
        D.load_medmcqa("train", root=tmp_path)
    with pytest.raises(ValueError, match="allowed: train, validation"):
        D.load_medmcqa("test", root=tmp_path)
    (tmp_path / "wikitext").mkdir()
    (tmp_path / "wikitext" / "wiki.test.raw").write_bytes(b"fine\nline two \xff\n")
    with pytest.raises(ValueError, match=r"wiki.test.raw:2: not UTF-8"):
        D.load_wikitext_lines(root=tmp_path)


def test_gzip_reader(tmp_path):
    p = tmp_path / "x.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write('{"text": "hello"}\n\n{"text": "world"}\n')
    assert [r["text"] for r in D.read_jsonl(p, ("text",))] == ["hello", "world"]


@pytest.mark.skipif(not REAL, reason="SMF_DATA_DIR not set")
def test_real_data_folder():
    assert len(D.load_medmcqa("train")) == 2650
    val = D.load_medmcqa("validation")
    assert len(val) == 4183
    share_a = sum(r["cop"] == 0 for r in val) / len(val)
    assert share_a == pytest.approx(0.322, abs=0.001)  # the README's majority baseline
    assert len(D.load_triviaqa(None)) == 11313
    assert len(D.load_oasst1_replies("validation")) == 808
    assert len(D.load_wikitext_lines(None)) > 1000
    bg = D.load_background(None)
    assert not any(s.startswith("Du Fu ") or s.startswith("Nero ") for s in bg)


def test_fetch_data_writes_the_layout_the_loaders_read(tmp_path, monkeypatch):
    """`python -m smf_lib data --to DIR` on a stand-in Hub: every file of the layout, read back by the loaders."""
    import smf_lib.fetch as F
    from smf_lib import data as D

    msgs = [{"message_id": "p1", "parent_id": None, "role": "prompter", "lang": "en", "rank": None,
             "text": "How do plants make food from light?"},
            {"message_id": "a1", "parent_id": "p1", "role": "assistant", "lang": "en", "rank": 0,
             "text": "Plants use photosynthesis: chlorophyll captures light to turn water and CO2 into sugar."}]
    med = [{"question": "q?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 2, "choice_type": "single"}]
    hub = {("medmcqa", "train"): med, ("medmcqa", "validation"): med,
           ("wikitext", "test"): [{"text": " = Title = \n"}, {"text": " Some text .\n"}],
           ("triviaqa", "validation"): [{"question": "Capital of France?", "answer": {"aliases": ["Paris"]}}],
           ("oasst1", "validation"): msgs, ("oasst1", "train"): msgs}
    monkeypatch.setattr(F, "_hub", lambda name, split: hub[(name, split)])
    F.fetch_data(tmp_path, progress=False)
    assert {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()} == set(F.LAYOUT)
    assert D.load_medmcqa("validation", root=tmp_path)[0]["cop"] == 2
    assert D.load_triviaqa(root=tmp_path)[0]["aliases"] == ["Paris"]
    assert D.load_oasst1_pairs(root=tmp_path) == [(msgs[0]["text"], msgs[1]["text"])]
    assert D.load_oasst1_replies("train", root=tmp_path) == [msgs[1]["text"]]
    assert D.load_background(root=tmp_path) == [msgs[1]["text"]]
    assert "Some text" in D.wikitext_text(root=tmp_path)
