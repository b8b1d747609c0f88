"""The README is a front page (<= 200 lines) and the docs hold the manual: every document or file
they cite exists, the README's composing example runs, and every command they show is one the
project has, with flags that command defines (config overrides that the config holds, benchmark
flags that the script declares); the commands themselves run in the tests of each command."""
import os
import re
import runpy
import shlex
import subprocess
import sys
import tomllib

import pytest

from tests.helpers import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MANUAL = ["performance", "evaluation", "openvocab", "differences", "architecture"]  # docs/<name>.md


def test_every_cited_markdown_file_exists():
    cited = set()
    for folder in ("diffcut_jax", "configs", "launch", "benchmarks", "tests"):
        for path in (REPO / folder).rglob("*.py"):
            cited |= set(re.findall(r"\b((?:[\w.-]+/)*[\w.-]+\.md)\b", path.read_text()))
    assert {"docs/algorithm.md", "docs/protocol.md"} <= cited
    missing = sorted(c for c in cited if not (REPO / c).is_file())
    assert missing == []


def test_readme_is_a_front_page_and_the_manual_is_in_docs():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for stem in MANUAL:
        name = f"{stem}.md"
        assert (REPO / "docs" / name).is_file() and f"(docs/{name})" in readme, name
    for heading in ("## Install", "## Segment your images", "## Evaluate on the paper's benchmarks",
                    "## Compose with your own JAX code", "## Try it: notebooks and the web demo",
                    "## Figures", "## Differences from the original"):
        assert heading in readme, heading


def test_links_and_paths_in_the_docs_exist():
    missing = []
    for doc in DOCS:
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if not target.startswith("http") and not (doc.parent / target).exists():
                missing.append(f"{doc.name}: link {target}")
        for path in re.findall(r"`((?:diffcut_jax|benchmarks|tests|configs|launch|notebooks|docs)/[\w./-]+\.(?:py|md|ipynb|json))`", text):
            if not (REPO / path).exists():
                missing.append(f"{doc.name}: {path}")
    assert missing == []


def _shown_commands():
    for doc in DOCS:
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", doc.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                if words:
                    yield doc.name, words


def _command_flags(command: str) -> set[str]:
    res = subprocess.run([sys.executable, "-m", f"diffcut_jax.launch.{command}", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu"))
    assert res.returncode == 0, res.stderr[-2000:]
    return set(re.findall(r"^\s+--(?:\[no\])?([\w.]+):", res.stdout, re.M))


def _config(value: str):
    from diffcut_jax.launch.eval import config_path

    path, _, arg = config_path(value).partition(":")
    return runpy.run_path(path)["get_config"](arg or None)


def test_every_command_shown_exists_with_its_flags():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    flags, problems, checked = {}, [], 0
    for doc, words in _shown_commands():
        where = f"{doc}: {' '.join(words)}"
        if words[0] == "diffcut-jax" or words[:3] == ["python", "-m", "diffcut_jax.launch.eval"]:
            command = words[1] if words[0] == "diffcut-jax" else "eval"
            if command not in flags:
                flags[command] = _command_flags(command)
            for word in words[2:]:
                if not word.startswith("--"):
                    continue
                name, _, value = word[2:].partition("=")
                if name == "config" and value != "path/to/my_config.py":
                    _config(value)  # exits naming the config if there is none
                elif name.startswith("config."):
                    cfg = _config(next(w for w in words if w.startswith("--config="))[9:])
                    node = cfg
                    for key in name.split(".")[1:]:
                        if key not in node:
                            problems.append(f"{where}: no {name} in the config")
                            break
                        node = node[key]
                elif name not in flags[command]:
                    problems.append(f"{where}: {command} has no flag --{name}")
            checked += 1
        elif words[0] == "python" and words[1].startswith("benchmarks/"):
            source = (REPO / words[1]).read_text()
            for word in words[2:]:
                if word.startswith("--") and f'"{word.partition("=")[0]}"' not in source:
                    problems.append(f"{where}: {words[1]} declares no {word}")
            checked += 1
        elif words[:2] == ["pip", "install"]:
            for extra in re.findall(r"\[(\w+)\]", words[-1]):
                if extra not in extras:
                    problems.append(f"{where}: no extra {extra!r}")
            checked += 1
        elif words[:2] == ["jupyter", "notebook"]:
            if not (REPO / words[2]).is_file():
                problems.append(f"{where}: no notebook {words[2]}")
            checked += 1
        elif words[:3] == ["python", "-m", "pytest"]:
            checked += 1
        else:
            problems.append(f"{where}: a command this test does not know")
    assert problems == []
    assert checked >= 40 and set(flags) == {"segment", "coherence", "eval", "demo"}


@pytest.mark.slow
def test_readme_compose_example_runs_on_eight_devices(tmp_path):
    readme = (REPO / "README.md").read_text()
    code = re.search(r"## Compose with your own JAX code.*?```python\n(.*?)```", readme, re.S).group(1)
    code = code.replace("/tmp/diffcut-tiny", str(tmp_path / "tiny"))
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().splitlines()[-1] == "(8, 16) True"
