"""The user documentation stands alone: docs/api.md's example runs as written, every name
``gtn_nas`` exports loads lazily and is documented, and the docs link only to files of this
repository."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gtn_nas

ROOT = Path(__file__).resolve().parents[1]
API_DOC = ROOT / "docs" / "api.md"
USER_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PUBLIC = [name for name in gtn_nas.__all__ if name != "__version__"]


def python_blocks(markdown: str) -> list[str]:
    """The fenced ```python blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.M | re.S)


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_import_is_light_and_every_export_resolves():
    code = ("import sys, gtn_nas\n"
            "heavy = sorted(m for m in ('torch', 'nni', 'lightning_fabric') if m in sys.modules)\n"
            "assert not heavy, heavy\n"
            "assert set(gtn_nas.__all__) <= set(dir(gtn_nas))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [name for name in PUBLIC if getattr(gtn_nas, name, None) is None] == []
    assert gtn_nas.load_dataset.__module__ == "gtn_nas.data.core"
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        gtn_nas.not_a_name  # noqa: B018


def test_distill_students_is_the_distill_stage_whatever_was_imported_first():
    import gtn_nas.distill.jobs as jobs  # sets the attribute gtn_nas.distill to the subpackage

    assert gtn_nas.distill_students is jobs.distill
    assert gtn_nas.distill.__name__ == "gtn_nas.distill"


def test_every_export_is_documented():
    text = API_DOC.read_text()
    assert [name for name in PUBLIC if f"`{name}" not in text] == []


@pytest.mark.slow
def test_api_doc_examples_run(tmp_path):
    """The python blocks of docs/api.md, in order, as one script in an empty folder."""
    blocks = python_blocks(API_DOC.read_text())
    assert len(blocks) >= 6
    shutil.copytree(ROOT / "examples" / "configs", tmp_path / "examples" / "configs")
    script = tmp_path / "api_examples.py"
    script.write_text("\n".join(blocks))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    for path in ("runs/demo/report.md", "runs/teacher/teacher.pt", "runs/distill/summary.md",
                 "runs/s_nas_s.onnx"):
        assert (tmp_path / path).is_file(), path
    assert "gain over training alone" in done.stdout


def test_user_docs_link_only_inside_the_repository():
    outside = os.path.join("..", "shared")
    problems = []
    for doc in USER_DOCS:
        text = doc.read_text()
        if outside in text:
            problems.append(f"{doc.name}: names {outside}")
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if ROOT not in file.parents or not file.exists():
                problems.append(f"{doc.name}: {target} is not a file of this repository")
            elif anchor and file.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", file.read_text(), flags=re.M)
                if anchor not in {slug(h) for h in headings}:
                    problems.append(f"{doc.name}: {target} names no heading of {file.name}")
    assert problems == []
