"""The docs and scripts speak to users: what to run and what was measured, nothing about how
the project was built or where (issue 31 item 13).

Every text file under docs/ and scripts/, README.md and CHANGELOG.md is searched for:

- absolute paths of the machine the project was developed on (`/work/...`);
- references to material the repository does not contain (`../shared`, `reference/*.md`, a
  "steering" repository);
- the call syntax of the tool that lent a GPU during development (`run(command=...`,
  `carry=[...]`, "the device tool");
- machines said to be "lent", and "session" in the sense of a development session.

"session" is allowed only as pytest's: "pytest session", "session-scoped" and
`scope="session"` (or with single quotes). Every other "session"/"sessions", whatever the
case, is refused; torch's "process group" never contains the word.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN: dict[str, re.Pattern[str]] = {
    "an absolute path of the development machine": re.compile(r"/work/"),
    "a folder outside the repository": re.compile(r"\.\./shared\b"),
    "a reference file outside the repository": re.compile(r"(?<![\w/.-])reference/[\w.-]+\.md\b"),
    "a steering repository": re.compile(r"\bsteering\b", re.IGNORECASE),
    "the development tool's call syntax": re.compile(r"\brun\(command=|\bcarry=\["),
    "the development tool's name": re.compile(r"\bdevice tool\b", re.IGNORECASE),
    "who was lent a machine": re.compile(r"\blent\b", re.IGNORECASE),
    "a development session": re.compile(
        r"(?<!pytest )(?<!scope=\")(?<!scope=')\bsessions?\b(?!-scoped)", re.IGNORECASE
    ),
}


def user_facing_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "CHANGELOG.md"]
    for folder in ("docs", "scripts"):
        files += sorted(p for p in (ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return files


def findings(text: str) -> list[str]:
    return [f"{what}: {m.group(0)!r}" for what, pattern in FORBIDDEN.items() for m in pattern.finditer(text)]


@pytest.mark.parametrize(
    "text",
    [
        "git clone /work/main /tmp/fresh",
        "see ../shared/reference/h100-baseline.md",
        "as reference/field.md says",
        "the steering repo",
        'run(command="bash scripts/gpu-checks.sh", timeout_s=580)',
        'carry=[".whl", ".gpu-data"]',
        "then, with the device tool:",
        "no GPU was lent so far",
        "The run was stopped at step 3,100 when a session ended",
        "the sessions that built `dv bench` had no GPU",
        "a CPU session gives",
        "Sessions' test runs shared it",
    ],
)
def test_the_patterns_catch_development_narration(text: str) -> None:
    assert findings(text), text


@pytest.mark.parametrize(
    "text",
    [
        "a session-scoped pytest fixture",
        '@pytest.fixture(scope="session")',
        "@pytest.fixture(scope='session')",
        "once per pytest session",
        "torch.distributed's process group",
        "words steer the model",
        "the reference point is eager diffusers",
        "`tests/fixtures/reference/`",
        "OUT=${OUT:-/tmp/gpu-checks}",
        "equivalent, silently, relentless",
    ],
)
def test_the_patterns_allow_what_users_may_read(text: str) -> None:
    assert not findings(text), findings(text)


def test_docs_scripts_readme_and_changelog_speak_to_users() -> None:
    problems = []
    for path in user_facing_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # images and other binary files
        for number, line in enumerate(text.splitlines(), 1):
            problems += [f"{path.relative_to(ROOT)}:{number}: {found}" for found in findings(line)]
    assert not problems, "\n".join(problems)
