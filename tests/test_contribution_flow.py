"""The contribution flow (issue 17): a submission PR may change only ``submissions/`` (the PR workflow's path check,
run on a real temporary git repository), the PR workflow validates and does a throw-away build without the byte
check of the committed ``leaderboard/``, the Pages workflow builds and publishes on a push to main with the official
actions, and the PR template asks for hardware, wall time, model link, licence, suite and the exact command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".github" / "scripts" / "pr_paths.py"
WORKFLOWS = REPO / ".github" / "workflows"
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env={**os.environ, **GIT_ENV})


def write(repo: Path, rel: str, text: str = "x\n") -> None:
    (repo / rel).parent.mkdir(parents=True, exist_ok=True)
    (repo / rel).write_text(text)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository whose main has code, a committed site and one submission; HEAD is a new branch ``pr``."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    for rel in ("collapse_bench/cli.py", "leaderboard/index.html", "submissions/README.md", "submissions/org/a/quick-1.json"):
        write(root, rel)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    git(root, "checkout", "-q", "-b", "pr")
    return root


def check(repo: Path) -> subprocess.CompletedProcess[str]:
    """The PR workflow's step: the script against the base branch (committing the PR's changes first)."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", "pr")
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--base", "main", "--repo", str(repo)], capture_output=True, text=True, check=False
    )


def test_a_pr_adding_one_submission_passes(repo: Path) -> None:
    write(repo, "submissions/org/b/quick-2.json")
    write(repo, "submissions/org/b/quick-2.samples.jsonl")
    done = check(repo)
    assert done.returncode == 0, done.stderr
    assert "ok: 2 changed paths, a submission PR (2 files added under submissions/)" in done.stdout


def test_a_submission_pr_that_edits_the_site_fails_in_one_line(repo: Path) -> None:
    write(repo, "submissions/org/b/quick-2.json")
    write(repo, "leaderboard/index.html", "rebuilt\n")
    done = check(repo)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("pr_paths: error: leaderboard/index.html: a pull request that adds a submission")
    assert "(submissions/org/b/quick-2.json) may change only files under submissions/" in lines[0]
    write(repo, "collapse_bench/cli.py", "changed\n")  # two paths outside: the first is named, the other counted
    done = check(repo)
    assert done.returncode == 1 and "collapse_bench/cli.py (and 1 other path): a pull request" in done.stderr


def test_code_prs_and_row_updates_pass(repo: Path) -> None:
    write(repo, "collapse_bench/cli.py", "changed\n")
    write(repo, "leaderboard/index.html", "rebuilt\n")
    write(repo, "submissions/org/a/quick-1.json", "migrated\n")  # modifies a row, adds none: a code PR
    done = check(repo)
    assert done.returncode == 0 and "no submission added" in done.stdout, done.stderr
    git(repo, "checkout", "-q", "-b", "rename", "main")
    git(repo, "mv", "submissions/org/a/quick-1.json", "submissions/org/a/quick-9.json")  # a rename adds a file
    write(repo, "README.md")
    assert check(repo).returncode == 1
    bad = subprocess.run([sys.executable, str(SCRIPT), "--base", "nope", "--repo", str(repo)], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("pr_paths: error: git diff nope...HEAD failed")


def workflow(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as True
    return doc


def runs(doc: dict[str, Any]) -> list[str]:
    return [s.get("run", "") for job in doc["jobs"].values() for s in job["steps"]]


def uses(doc: dict[str, Any]) -> list[str]:
    return [s["uses"].split("@")[0] for job in doc["jobs"].values() for s in job["steps"] if "uses" in s]


def test_pr_workflow_validates_builds_and_checks_paths_only() -> None:
    doc = workflow("submissions.yml")
    text = (WORKFLOWS / "submissions.yml").read_text()
    assert list(doc["on"]) == ["pull_request"] and doc["permissions"] == {"contents": "read"}
    steps = runs(doc)
    assert any('pr_paths.py --base "origin/$BASE"' in r for r in steps)
    assert any(r.strip() == "collapse-bench validate submissions/" for r in steps)
    assert any(r.startswith('collapse-bench leaderboard build --submissions submissions/ --out "$RUNNER_TEMP/') for r in steps)
    assert "matplotlib" not in text and "leaderboard check" not in text  # no byte check: PRs never conflict
    checkout = next(s for s in doc["jobs"]["validate-and-build"]["steps"] if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0  # the merge base needs the base branch's history


def test_pages_workflow_publishes_the_repository_layout() -> None:
    doc = workflow("pages.yml")
    assert doc["on"]["push"] == {"branches": ["main"]}
    assert doc["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    assert uses(doc) == [
        "actions/checkout",
        "actions/setup-python",
        "actions/configure-pages",
        "actions/upload-pages-artifact",
        "actions/deploy-pages",
    ]
    steps = runs(doc)
    assert steps.index("collapse-bench validate submissions/") < next(
        i for i, r in enumerate(steps) if "pages_site.py --submissions submissions --out _site" in r
    )
    upload = next(s for s in doc["jobs"]["build"]["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_site" and doc["jobs"]["deploy"]["needs"] == "build"
    assert doc["jobs"]["deploy"]["environment"]["name"] == "github-pages"
    assert "matplotlib" not in (WORKFLOWS / "pages.yml").read_text()


def test_pr_template_asks_for_the_run_and_the_checklist() -> None:
    text = (REPO / ".github" / "pull_request_template.md").read_text().lower()
    for field in ("**hardware**", "gpu", "**wall time**", "**model**", "hub id", "url", "**model licence**", "**suite**",
                  "**exact command**"):  # fmt: skip
        assert field in text, field
    assert "- [ ] `collapse-bench validate submissions/` passed" in text
    assert "- [ ] the pull request changes only files under `submissions/`" in text
