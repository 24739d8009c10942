"""Fail the session when a required integration suite was skipped or never ran.

`VAFLEET_REQUIRED_SUITES=vcsim,browser,scaleout` (set by `./vafleet test`) names markers whose
tests must really run: a skipped simulator, browser or scale-out test hides a broken harness,
so here it fails the run with a message that says which tests and why.
Works with pytest-xdist: workers tag each report with its suites; the controller judges.
"""

from __future__ import annotations

import os

import pytest

ENV = "VAFLEET_REQUIRED_SUITES"
TAG = "required_suites"


def required_suites() -> list[str]:
    return [name.strip() for name in os.environ.get(ENV, "").split(",") if name.strip()]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    suites = sorted({mark.name for mark in item.iter_markers()} & set(required_suites()))
    if suites:
        # user_properties travel from xdist workers to the controller with the report.
        report.user_properties.append((TAG, suites))
    return report


class RequiredSuitesGuard:
    def __init__(self, suites: list[str]) -> None:
        self.suites = suites
        self.ran = dict.fromkeys(suites, 0)
        self.skipped: dict[str, list[str]] = {name: [] for name in suites}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        suites = next((value for key, value in report.user_properties if key == TAG), [])
        for name in suites:
            if report.skipped:
                self.skipped[name].append(f"{report.nodeid}: {_reason(report)}")
            elif report.when == "call":
                self.ran[name] += 1

    def problems(self) -> list[str]:
        lines = []
        for name in self.suites:
            lines += [f"[{name}] skipped {entry}" for entry in self.skipped[name]]
            if not self.ran[name]:
                lines.append(f"[{name}] no test marked '{name}' ran")
        return lines

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.problems() and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        problems = self.problems()
        if not problems:
            terminalreporter.write_line(f"required integration suites ran: {', '.join(self.suites)}", green=True)
            return
        terminalreporter.write_sep("=", "REQUIRED INTEGRATION SUITES DID NOT RUN", red=True, bold=True)
        for line in problems:
            terminalreporter.write_line(line, red=True)
        terminalreporter.write_line(
            f"{ENV}={','.join(self.suites)} requires every test of these suites to run: "
            "install what the skip reasons name (./vafleet test installs the system packages) and run again.",
            red=True,
        )


def _reason(report: pytest.TestReport) -> str:
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    if hasattr(report, "wasxfail"):
        return f"xfail: {report.wasxfail}"
    return str(report.longrepr)


def pytest_configure(config: pytest.Config) -> None:
    suites = required_suites()
    # Under xdist only the controller (no `workerinput`) sees all reports and judges.
    if suites and not hasattr(config, "workerinput"):
        config.pluginmanager.register(RequiredSuitesGuard(suites), "vafleet-required-suites-guard")
