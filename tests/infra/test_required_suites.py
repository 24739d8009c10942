"""The guard that fails a run when a required integration suite was skipped or never ran.

Each case runs a real pytest session in a separate process on a small generated test file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

TESTS = '''
import pytest

@pytest.mark.vcsim
def test_simulator():
    assert True

@pytest.mark.browser
def test_browser():
    pytest.skip("chromium is not installed")

@pytest.mark.scaleout
def test_redis():
    assert True

def test_plain():
    assert True
'''


def run_session(tmp_path: Path, required: str, *args: str, scaleout: bool = False) -> subprocess.CompletedProcess:
    (tmp_path / "test_sample.py").write_text(TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    vcsim\n    browser\n    scaleout\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAFLEET_", "DJANGO_", "PYTEST_"))}
    env.update(PYTHONPATH=str(ROOT), VAFLEET_REQUIRED_SUITES=required)
    if scaleout:
        env.update(VAFLEET_DATABASE_URL="postgresql://unused/unused", VAFLEET_REDIS_URL="redis://unused")
    command = [
        sys.executable, "-m", "pytest", "-p", "no:django", "-p", "no:cacheprovider", "--strict-markers",
        "-p", "tests.plugins.required_suites", "-p", "tests.plugins.scaleout", "-rs", *args,
    ]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_run_of_every_required_suite_passes(tmp_path):
    done = run_session(tmp_path, "vcsim", "-k", "not browser")
    assert done.returncode == 0, done.stdout
    assert "required integration suites ran: vcsim" in done.stdout


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_skipped_required_test_fails_the_run(tmp_path, workers):
    done = run_session(tmp_path, "vcsim,browser", *workers)
    assert done.returncode == 1, done.stdout
    assert "REQUIRED INTEGRATION SUITES DID NOT RUN" in done.stdout
    assert "[browser] skipped test_sample.py::test_browser: chromium is not installed" in done.stdout
    assert "[vcsim]" not in done.stdout


def test_a_required_suite_with_no_test_fails_the_run(tmp_path):
    done = run_session(tmp_path, "vcsim", "-k", "plain")
    assert done.returncode == 1, done.stdout
    assert "[vcsim] no test marked 'vcsim' ran" in done.stdout


def test_without_the_variable_skips_are_allowed(tmp_path):
    done = run_session(tmp_path, "")
    assert done.returncode == 0, done.stdout
    assert "REQUIRED" not in done.stdout


def test_scaleout_tests_skip_loudly_without_postgresql_and_redis(tmp_path):
    done = run_session(tmp_path, "scaleout")
    assert done.returncode == 1, done.stdout
    assert "SCALE-OUT TEST NOT RUN: needs PostgreSQL and Redis" in done.stdout
    assert "[scaleout] skipped test_sample.py::test_redis" in done.stdout


def test_scaleout_tests_run_when_configured(tmp_path):
    done = run_session(tmp_path, "scaleout", "-k", "redis", scaleout=True)
    assert done.returncode == 0, done.stdout
    assert "1 passed" in done.stdout
