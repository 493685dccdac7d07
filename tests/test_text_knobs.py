"""Numbers in YAML, JSON, TOML and SQL files, and the offline agent editing them."""
import json
import tomllib

import yaml

from engine.agents.base import ProposalRequest
from engine.agents.knobs import apply_values, file_knobs, parse_changes
from engine.agents.offline import OfflineAgent
from engine.agents.text_knobs import find_text_knobs

YAML = """# routing rules
threshold: 1.5   # below this, the ticket goes to `other`
categories:
  billing:
    weight: 1.0
    keywords: {refund: 2.0, "invoice": 1.5}
    patterns:
      - 0.5
      - 2
  name: "v 3"
"""


def names(path, text):
    return {name: value for name, value, _, _ in find_text_knobs(path, text)}


def test_yaml_knobs_are_named_by_key_path():
    assert names("r.yaml", YAML) == {"threshold": 1.5, "categories.billing.weight": 1.0,
                                     "categories.billing.keywords.refund": 2.0,
                                     "categories.billing.keywords.invoice": 1.5,
                                     "categories.billing.patterns.0": 0.5, "categories.billing.patterns.1": 2}


def test_json_toml_and_sql_knobs():
    assert names("c.json", '{"a": 1, "b": {"c": [1.5, 2, {"d": 3e-3}]},\n "e": -2, "s": "x 5"}') == {
        "a": 1, "b.c.0": 1.5, "b.c.1": 2, "b.c.2.d": 0.003, "e": -2}
    assert names("c.toml", "[retrieval]\nk1 = 1.2 # x\nb = 0.75\n[chunk]\nsize = 400\nname = 'a'\n") == {
        "retrieval.k1": 1.2, "retrieval.b": 0.75, "chunk.size": 400}
    sql = "PRAGMA cache_size = 2000;\n-- PRAGMA mmap_size = 5;\nPRAGMA main.mmap_size=1048576; SELECT 7;\n"
    assert names("t.sql", sql) == {"cache_size": 2000, "mmap_size": 1048576}


def test_edits_keep_each_format_valid():
    knobs = {k.name: k for k in file_knobs("r.yaml", YAML)}
    new = apply_values(YAML, knobs, {"threshold": 2.5e-5, "categories.billing.keywords.invoice": 3.0})
    loaded = yaml.safe_load(new)
    assert loaded["threshold"] == 2.5e-5 and loaded["categories"]["billing"]["keywords"]["invoice"] == 3.0
    assert "# below this" in new
    text = '{"a": {"b": 4}}'
    knobs = {k.name: k for k in file_knobs("c.json", text)}
    assert json.loads(apply_values(text, knobs, {"a.b": 8})) == {"a": {"b": 8}}
    text = "[x]\nk1 = 1.2\n"
    knobs = {k.name: k for k in file_knobs("c.toml", text)}
    assert tomllib.loads(apply_values(text, knobs, {"x.k1": 0.6})) == {"x": {"k1": 0.6}}


def request(root, editable, ledger=(), experiment=2):
    return ProposalRequest(repo_root=root, editable=editable, program_text="", ledger=list(ledger),
                           experiment=experiment, run_dir=root / "runs", hardware="cpu", budget="",
                           task_kind="command", metric="accuracy", direction="maximize")


def test_offline_agent_edits_a_sql_constant(tmp_path):
    (tmp_path / "ex").mkdir()
    sql = tmp_path / "ex" / "tuning.sql"
    sql.write_text("-- tuning\nPRAGMA cache_size = 256;\nCREATE INDEX i ON t(a);\n")
    proposal = OfflineAgent(seed=0, bounds={"cache_size": (16, 4096)}).propose(request(tmp_path, ["ex/*.sql"]))
    assert proposal.description.startswith("cache_size: 256 -> ")
    new_value = int(proposal.description.split("-> ")[1])
    assert sql.read_text() == f"-- tuning\nPRAGMA cache_size = {new_value};\nCREATE INDEX i ON t(a);\n"


def test_offline_agent_edits_yaml_and_learns_in_the_maximize_direction(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("threshold: 2.0\nweights: {billing: 1.0}\n")
    # raising the threshold was a loss for a maximized metric (accuracy fell): not tried again
    ledger = [{"experiment": 1, "description": "threshold: 2.0 -> 4.0", "status": "discard", "kept": False,
               "metric": "accuracy", "direction": "maximize", "accuracy": 0.5, "best_before": 0.7}]
    seen = set()
    for experiment in range(2, 8):
        rules.write_text("threshold: 2.0\nweights: {billing: 1.0}\n")
        proposal = OfflineAgent(seed=experiment, sampler="steps").propose(request(tmp_path, ["rules.yaml"], ledger, experiment))
        seen.add(proposal.description)
        assert yaml.safe_load(rules.read_text()) != {"threshold": 2.0, "weights": {"billing": 1.0}}
    # the other way (down) is favoured: the loss was read as a loss, not as a gain
    assert seen and all(d.startswith("threshold: 2.0 -> ") and float(d.split("-> ")[1]) < 2.0 for d in seen)


def test_with_several_files_knobs_carry_their_file(tmp_path):
    (tmp_path / "a.toml").write_text("[x]\nk1 = 1.2\n")
    (tmp_path / "b.sql").write_text("PRAGMA cache_size = 64;\n")
    proposal = OfflineAgent(seed=1).propose(request(tmp_path, ["a.toml", "b.sql"]))
    names = set(parse_changes(proposal.description))
    assert names and names <= {"a.toml/x.k1", "b.sql/cache_size"}
    untouched = {"a.toml": "[x]\nk1 = 1.2\n", "b.sql": "PRAGMA cache_size = 64;\n"}
    for file, text in untouched.items():
        changed = any(name.startswith(file + "/") for name in names)
        assert ((tmp_path / file).read_text() == text) == (not changed)
