"""Every document the code cites lives in the repository."""
import re

from tests.helpers import REPO


def test_every_cited_markdown_file_exists():
    cited = set()
    for folder in ("diffcut_jax", "configs", "launch", "benchmarks", "tests"):
        for path in (REPO / folder).rglob("*.py"):
            cited |= set(re.findall(r"\b((?:[\w.-]+/)*[\w.-]+\.md)\b", path.read_text()))
    assert {"docs/algorithm.md", "docs/protocol.md"} <= cited
    missing = sorted(c for c in cited if not (REPO / c).is_file())
    assert missing == []
