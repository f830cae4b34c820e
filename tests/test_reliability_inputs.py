"""Bad input beyond tests/test_tasks.py and tests/test_cards.py, and the safety rules.

Hostile or broken files (alias bombs, deeply nested JSON, unpaired surrogate escapes, ids of
a megabyte, training sets smaller than the head) must fail fast with a short message naming
file, line and field, or work. Weights are never unpickled, the UIs listen on loopback by
default, and card text is data: stored and encoded verbatim, never evaluated.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from system_tools import HYDRA, free_port

from hydra_core.data.beir_folder import load_beir_folder
from hydra_core.data.cards import load_card, write_card
from hydra_core.encoding.card_parts import CARD_PARTS, card_part_embeddings
from hydra_core.encoding.encoder import FrozenEncoder
from hydra_core.errors import HydraInputError
from hydra_core.model.head import head_forward
from hydra_core.model.hypernet import initial_hypernet
from hydra_core.settings import PROJECT_ROOT
from hydra_pipeline.artifacts import card_from_record, card_record
from hydra_pipeline.tracking import TrackingTarget

# ------------------------------------------------------------------------------ corpora, qrels

CORPUS = '{"_id": "d1", "text": "first"}\n{"_id": "d2", "text": "second"}\n'
QUERIES = '{"_id": "q1", "text": "a query"}\n'
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\n"


def _beir(folder: Path, corpus: str = CORPUS, qrels: str = QRELS) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(corpus, encoding="utf-8")
    (folder / "queries.jsonl").write_text(QUERIES, encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text(qrels, encoding="utf-8")
    return folder


MEGA_ID = "x" * 1_000_000


HOSTILE = [
    # json.loads raises RecursionError on deep nesting: it must not escape as a traceback.
    ("deep-json", CORPUS + "[" * 100_000 + "]" * 100_000 + "\n", QRELS,
     "corpus.jsonl", 3, None, "nested too deeply"),
    # "\ud800" is valid JSON but not text: it broke later, far from the file, unexplained.
    ("surrogate-text", CORPUS + '{"_id": "d3", "text": "bad \\ud800"}\n', QRELS,
     "corpus.jsonl", 3, "text", "unpaired surrogate"),
    ("surrogate-id", CORPUS + '{"_id": "d\\udfff", "text": "x"}\n', QRELS,
     "corpus.jsonl", 3, "_id", "unpaired surrogate"),
    # A megabyte id or header must not become a megabyte error message.
    ("mega-duplicate-id",
     CORPUS + json.dumps({"_id": MEGA_ID, "text": "a"}) + "\n"
     + json.dumps({"_id": MEGA_ID, "text": "b"}) + "\n", QRELS,
     "corpus.jsonl", 4, "_id", "duplicate id"),
    ("mega-header", CORPUS, MEGA_ID + "\nq1\td1\t1\n",
     "qrels/test.tsv", 1, None, "expected the header"),
    ("mega-unknown-query", CORPUS, "query-id\tcorpus-id\tscore\n" + MEGA_ID + "\td1\t1\n",
     "qrels/test.tsv", 2, "query-id", "unknown query id"),
    ("int64-overflow-score", CORPUS, "query-id\tcorpus-id\tscore\nq1\td1\t" + "9" * 30 + "\n",
     "qrels/test.tsv", 2, "score", "out of range"),
    # Judged, but nothing relevant: every method would score 0, which is no result.
    ("no-positive-judgment", CORPUS, "query-id\tcorpus-id\tscore\nq1\td1\t0\nq1\td2\t-1\n",
     "qrels/test.tsv", None, None, "no positive judgment"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "corpus", "qrels", "file", "line", "field", "words"),
    HOSTILE,
    ids=[case[0] for case in HOSTILE],
)
def test_hostile_corpus_and_qrels_fail_briefly_with_their_location(
    tmp_path: Path,
    name: str,
    corpus: str,
    qrels: str,
    file: str,
    line: int,
    field: str | None,
    words: str,
) -> None:
    folder = _beir(tmp_path / name, corpus, qrels)
    before = sorted(p.name for p in folder.rglob("*"))
    started = time.perf_counter()
    with pytest.raises(HydraInputError) as info:
        load_beir_folder(folder)
    error = info.value
    assert time.perf_counter() - started < 5
    assert error.path == folder / file and error.line == line and error.field == field
    assert str(folder / file) in str(error) and words in str(error)
    assert len(str(error)) < 400, "a hostile value must not be echoed whole"
    assert sorted(p.name for p in folder.rglob("*")) == before  # nothing written


# ------------------------------------------------------------------------------ cards

VALID = {
    "name": "toy",
    "description": "A toy task.",
    "relevance": "Documents about the query topic.",
    "domain": "testing",
    "query_type": "keyword query",
    "example_queries": ["first query"],
    "example_documents": ["a document"],
    "source": "beir/toy",
}


def test_yaml_alias_bomb_fails_fast_and_briefly(tmp_path: Path) -> None:
    """Nine levels of aliases: a 700-byte card whose value is 9^9 strings if expanded.

    The error message used to repr() the whole value: minutes of CPU and gigabytes of memory.
    """
    levels = ["a: &a [" + ", ".join(['"lol"'] * 9) + "]"]
    for previous, current in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"{current}: &{current} [" + ", ".join([f"*{previous}"] * 9) + "]")
    text = yaml.safe_dump({k: v for k, v in VALID.items() if k != "example_queries"})
    text += "\n".join(levels) + "\nexample_queries: [" + ", ".join(["*i"] * 9) + "]\n"
    path = tmp_path / "bomb.yaml"
    path.write_text(text, encoding="utf-8")
    assert path.stat().st_size < 2_000
    started = time.perf_counter()
    with pytest.raises(HydraInputError) as info:
        load_card(path)
    assert time.perf_counter() - started < 2
    assert info.value.field == "example_queries" and str(path) in str(info.value)
    assert len(str(info.value)) < 400


PWNED = "PWNED"
PAYLOADS = {
    "description": "{{ cycler.__init__.__globals__.os.popen('touch " + PWNED + "').read() }}",
    "relevance": "__import__('os').system('touch " + PWNED + "')",
    "domain": "${HOME} $(touch " + PWNED + ") `touch " + PWNED + "` %(name)s {0} {name!r}",
    "query_type": "!!python/object/apply:os.system ['touch " + PWNED + "']",
    "example_queries": ["'; DROP TABLE metrics; --", "exec(open('x').read())"],
    "example_documents": ["<script>alert(1)</script>", "{{7*7}}"],
}


def test_card_text_is_data_stored_and_encoded_verbatim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encoder: FrozenEncoder
) -> None:
    monkeypatch.chdir(tmp_path)  # any relative "touch" would land here
    path = tmp_path / "payload.yaml"
    path.write_text(yaml.safe_dump({**VALID, **PAYLOADS}), encoding="utf-8")
    card = load_card(path)
    for field, value in PAYLOADS.items():
        assert getattr(card, field) == value, field
    write_card(card, tmp_path / "copy.yaml")  # file round trip
    assert load_card(tmp_path / "copy.yaml") == card
    assert card_from_record(json.loads(json.dumps(card_record(card)))) == card  # pipeline store
    # What reaches the encoder is the literal text, e.g. no template rendered to "49".
    parts = card_part_embeddings(card, encoder)
    assert parts.shape[0] == len(CARD_PARTS)
    literal = encoder.encode([PAYLOADS["description"], PAYLOADS["relevance"]], "query")
    torch.testing.assert_close(parts[:2], torch.from_numpy(literal), atol=1e-6, rtol=0)
    assert not list(tmp_path.rglob(PWNED)) and not (PROJECT_ROOT / PWNED).exists()


def test_an_unquoted_python_tag_is_refused_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tag.yaml"
    text = yaml.safe_dump(VALID).replace(
        "domain: testing", f"domain: !!python/object/apply:os.system ['touch {PWNED}']"
    )
    path.write_text(text, encoding="utf-8")
    with pytest.raises(HydraInputError) as info:
        load_card(path)
    assert (
        str(path) in str(info.value)
        and info.value.line == text.count("\n", 0, text.index("!!")) + 1
    )
    assert not (tmp_path / PWNED).exists()


# ------------------------------------------------------------------------------ tiny tasks


def test_a_training_set_smaller_than_the_head_still_gets_a_geometry_preserving_head() -> None:
    """40 reference embeddings, fewer than the head's 256 outputs: this used to crash with a
    bare numpy shape error in the middle of training setup."""
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(40, 384)).astype(np.float32)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    hypernet = initial_hypernet("all-MiniLM-L6-v2", reference)
    card_parts = torch.from_numpy(rng.normal(size=(1, len(CARD_PARTS), 384)).astype(np.float32))
    with torch.no_grad():
        weight, bias, scale, shift = (t[0] for t in hypernet(card_parts))
        projected = head_forward(torch.from_numpy(reference), weight, bias, scale, shift)
    cosines = torch.from_numpy(reference @ reference.T)
    torch.testing.assert_close(projected @ projected.T, cosines, atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------ safety

SOURCE_DIRS = (PROJECT_ROOT / "hydra_core", PROJECT_ROOT / "hydra_pipeline")
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve"}
UNSAFE_CALLS = {
    "torch.load": "unpickles; weights are safetensors",
    "torch.save": "pickles; weights are safetensors",
    "pd.read_pickle": "unpickles",
    "pandas.read_pickle": "unpickles",
    "yaml.load": "can build arbitrary objects; use yaml.safe_load",
    "yaml.unsafe_load": "builds arbitrary objects",
    "yaml.full_load": "builds arbitrary objects",
    "marshal.loads": "loads code objects",
    "eval": "evaluates text as code",
    "exec": "runs text as code",
}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _unsafe_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        where = f"{path}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            found += [f"{where}: imports {n}" for n in names if n.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in UNSAFE_CALLS:
                found.append(f"{where}: {name} {UNSAFE_CALLS[name]}")
            if name.split(".")[-1] == "load" and name.split(".")[0] in {"np", "numpy"}:
                for keyword in node.keywords:
                    if keyword.arg == "allow_pickle" and not (
                        isinstance(keyword.value, ast.Constant) and keyword.value.value is False
                    ):
                        found.append(f"{where}: {name}(allow_pickle=...) may unpickle")
    return found


def test_the_scanner_catches_unsafe_code(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import pickle\nimport numpy as np\nimport torch\nimport yaml\n"
        "np.load('x', allow_pickle=True)\ntorch.load('w.pt')\nyaml.load('a')\neval('1')\n"
        "np.load('y')\nmodel.eval()\n",
        encoding="utf-8",
    )
    found = _unsafe_uses(sample)
    assert sorted(entry.split(": ", 1)[1].split()[0] for entry in found) == [
        "eval",
        "imports",
        "np.load(allow_pickle=...)",
        "torch.load",
        "yaml.load",
    ]


def test_no_module_can_unpickle_or_evaluate_data() -> None:
    files = [path for folder in SOURCE_DIRS for path in sorted(folder.rglob("*.py"))]
    assert len(files) > 30
    found = [entry for path in files for entry in _unsafe_uses(path)]
    assert found == [], "\n".join(found)


def test_hydra_ui_serves_on_loopback_by_default(tmp_path: Path) -> None:
    """Run ``hydra ui`` for real and read the command it exec()s into, then stop it."""
    port = free_port()
    env = {
        **os.environ,
        "HYDRA_WORKSPACE": str(tmp_path / "workspace"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
    }
    ui = subprocess.Popen(
        [str(HYDRA), "ui", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    command: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and ui.poll() is None:
            raw = Path(f"/proc/{ui.pid}/cmdline").read_bytes()
            command = [part.decode() for part in raw.split(b"\0") if part]
            if "dagster" in command and "dev" in command:
                break
            time.sleep(0.005)
    finally:
        os.killpg(ui.pid, signal.SIGKILL)
        ui.wait(30)
    assert "dagster" in command and "dev" in command, command
    assert command[command.index("-h") + 1] == "127.0.0.1"
    assert command[command.index("-p") + 1] == str(port)
    assert ui.stderr is not None and f"http://127.0.0.1:{port}" in ui.stderr.read().decode()


def test_the_mlflow_ui_command_keeps_mlflows_loopback_default(tmp_path: Path) -> None:
    from mlflow.cli import cli

    target = TrackingTarget(f"sqlite:///{tmp_path}/m.db", "hydra", "m", tmp_path / "artifacts")
    command = target.ui_command()
    assert command.startswith("uv run mlflow ui ") and "--host" not in command
    server = cli.get_command(None, "ui")  # type: ignore[arg-type]
    assert server is not None
    hosts = [param.default for param in server.params if param.name == "host"]
    assert hosts == ["127.0.0.1"] and not os.environ.get("MLFLOW_HOST")
