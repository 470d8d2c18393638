"""`opensem export`: the champion as a GGUF that llama.cpp loads and answers with as the
transformers model does, an Ollama Modelfile beside it, the files logged on the model version."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from opensem.cli import app
from opensem.config import load_config
from opensem.train import run as train
from served import beasts_sem, opensem_serve

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("bundled_model_dir")]
REPO = Path(__file__).resolve().parents[1]

# llama.cpp answers a prompt rendered by the transformers tokenizer: the same text, greedy
LLAMA_ANSWER = """
import json, sys, llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=1024, verbose=False, seed=0)
out = llm(sys.argv[2], max_tokens=int(sys.argv[3]), temperature=0.0, top_k=1)
meta = llm.metadata
print(json.dumps({"text": out["choices"][0]["text"], "template": meta.get("tokenizer.chat_template", "")}))
"""


@pytest.fixture
def tools(project):
    """models/tools shared with the repo like models/base: llama.cpp's converter is fetched once."""
    (REPO / "models" / "tools").mkdir(parents=True, exist_ok=True)
    os.symlink(REPO / "models" / "tools", project / "models" / "tools")


def test_export_writes_a_gguf_llama_cpp_answers_with_and_a_modelfile_logged_on_the_version(project, tools, tmp_path):
    from opensem.export.llama_cpp import llama_python

    sem = beasts_sem("exp")
    settings = ["training.max_steps=12", "training.batch_size=1", "training.cpt_epochs=0", "training.learning_rate=2e-3",
                "training.lr_scheduler=constant", "training.warmup_ratio=0", "model.system_prompt=Answer briefly.",
                "retrieval.enabled=true", "retrieval.top_k=1"]
    result = train(sem, load_config(sem.root, "exp", settings))

    missing = CliRunner().invoke(app, ["export", "--sem", "exp"])
    assert missing.exit_code == 2 and "no version with alias 'champion'" in missing.output
    version = mlflow.register_model(result["model_uri"], "opensem-exp").version
    MlflowClient().set_registered_model_alias("opensem-exp", "champion", version)
    bad = CliRunner().invoke(app, ["export", "--sem", "exp", "--quant", "q3"])
    assert bad.exit_code == 2 and "q8_0" in bad.output

    done = CliRunner().invoke(app, ["export", "--sem", "exp"])
    assert done.exit_code == 0, done.output
    folder = sem.root / "exports" / "exp" / f"opensem-exp-v{version}-q8_0"
    assert "passages are not inside the GGUF" in " ".join(done.output.split())
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"opensem-exp-v{version}.q8_0.gguf", "Modelfile", "export.json",
                                                              "retrieval_passages.json"])
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".export-")]  # nothing half-written left
    gguf = folder / f"opensem-exp-v{version}.q8_0.gguf"
    modelfile = (folder / "Modelfile").read_text()
    assert f"FROM ./{gguf.name}" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert 'SYSTEM """Answer briefly."""' in modelfile and "PARAMETER temperature 0" in modelfile

    # logged on the version's run, and the version says where
    registered = MlflowClient().get_model_version("opensem-exp", version)
    tag = registered.tags["gguf_q8_0"]
    logged = {Path(f.path).name for f in MlflowClient().list_artifacts(registered.run_id, "export/q8_0")}
    assert gguf.name in logged and "Modelfile" in logged and tag.endswith("export/q8_0")

    # the same first answer from llama.cpp as from transformers, on the prompt evaluation asks
    python = llama_python()
    if python is None:
        pytest.fail("no llama-cpp-python to load the GGUF with: make setup-llama (make test builds it)")
    model = mlflow.pyfunc.load_model(f"models:/opensem-exp/{version}")
    expert = model.unwrap_python_model()
    question = "What colour is a Zorblat?"
    from opensem.generate import answer_chat, build_messages

    chat = build_messages(question, expert.system_prompt, expert.retriever.context(question))
    expected = answer_chat(expert.model, expert.tokenizer, chat, 16)["text"]
    prompt = expert.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    ran = subprocess.run([str(python), "-c", LLAMA_ANSWER, str(gguf), prompt, "16"], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    llama = json.loads(ran.stdout.strip().splitlines()[-1])
    assert "teal" in expected.lower() and llama["text"].strip().split(".")[0] == expected.split(".")[0], (llama, expected)
    from opensem.export import GENERATION_MARKERS

    assert "<|im_start|>" in llama["template"] and not GENERATION_MARKERS.search(llama["template"])  # one llama.cpp can run

    # the GGUF served behind the expert's own retrieval, through the OpenAI SDK
    with opensem_serve(sem.root, "exp", "--engine", "llama.cpp", env={"LLAMA_CPP_PYTHON": str(python)}) as (client, _):
        ask = {"model": "opensem-exp", "max_tokens": 16, "messages": [{"role": "user", "content": question}]}
        served = client.chat.completions.create(**ask)
        assert served.choices[0].message.content.split(".")[0] == expected.split(".")[0], (served, expected)
        assert served.model_extra["sources"][0]["document"] == "beasts.md"
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**ask, stream=True))
        assert streamed.strip() == served.choices[0].message.content

    q8_bytes = gguf.stat().st_size
    shutil.rmtree(folder)
    elsewhere = tmp_path / "out"
    again = CliRunner().invoke(app, ["export", "--sem", "exp", "--quant", "f16", "--out", str(elsewhere)])
    assert again.exit_code == 0, again.output
    assert (elsewhere / f"opensem-exp-v{version}.f16.gguf").stat().st_size > 1.5 * q8_bytes  # f16: two bytes a weight
    small = CliRunner().invoke(app, ["export", "--sem", "exp", "--quant", "q4_k_m", "--out", str(tmp_path / "q4")])
    assert small.exit_code == 0, small.output  # llama.cpp's quantizer, from the built llama-cpp-python
    assert (tmp_path / "q4" / f"opensem-exp-v{version}.q4_k_m.gguf").stat().st_size < 0.85 * q8_bytes
