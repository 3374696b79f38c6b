"""The DAG's params as the jobs' arguments: what Jinja cannot express in ``application_args`` (a
list param spliced into repeated flags, a flag present only when a param is true).

Standard library and core only, without Airflow, so the unit tests (in the app's venv, which has
no Airflow) check them as the DAG uses them.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core import runs
from core.env import env_str
from core.inputs import awaited_inputs, from_repository, input_patterns
from core.runs import forced_stages
from core.settings import get_settings

# The repository: where the jobs' files are, and what a relative input or DEMO_INPUT is taken from
APP_ROOT = Path(env_str("APP_ROOT", str(Path(__file__).resolve().parent.parent.parent)))


def load_args(params: Mapping[str, Any]) -> list[str]:
    """``--input`` once per file or glob of ``inputs``, ``--remove`` once per file name of ``remove``;
    ``--force`` when ``rerun`` forces load (:func:`rerun_args`).

    No ``inputs``: no ``--input``, and load decides (core.inputs.input_patterns): the demo files,
    or nothing when the run removes files, as for bin/pipeline.
    """
    return ([arg for path in _given_inputs(params) for arg in ("--input", path)]
            + [arg for name in params.get("remove") or [] for arg in ("--remove", name)] + rerun_args("load")(params))


def _given_inputs(params: Mapping[str, Any]) -> list[str]:
    return [from_repository(item, APP_ROOT) for item in params.get("inputs") or []]


def inputs_awaited(params: Mapping[str, Any], settle_s: float) -> tuple[list[str], str]:
    """What the DAG's ``wait_for_inputs`` sensor waits for before load reads its inputs in this run
    (core.inputs.input_patterns: what load decides from :func:`load_args`): the inputs that name no
    file yet and the files modified less than ``settle_s`` seconds ago (maybe still being written);
    and why load would refuse them, "" when it would not (core.inputs.awaited_inputs). So a file that
    arrives after the run began is loaded, once whole, rather than failing load for good or being
    loaded truncated; and inputs load refuses anyway fail the sensor at once, not after its timeout.
    With the ``done_marker`` param (default ``INPUT_DONE_MARKER``), also until every input's folder
    holds that file, which an exporter of several files writes last."""
    return awaited_inputs(input_patterns(params.get("inputs"), params.get("remove") or [], get_settings().demo_input,
                                         APP_ROOT), settle_s, params.get("done_marker"))


def rerun_args(job: str) -> Callable[[Mapping[str, Any]], list[str]]:
    """The arguments of ``job`` from the ``rerun`` param: ``--force`` when it names ``job`` or a stage
    before it (core.runs.forced_stages, as bin/pipeline --rerun), so the job redoes what its ledger
    says is done."""
    return lambda params: ["--force"] if job in forced_stages(params.get("rerun") or []) else []


def force_args(params: Mapping[str, Any]) -> list[str]:
    return ["--force"] if params["force_publish"] else []


def record_options(run_id: str, params: Mapping[str, Any]) -> None:
    """Record the run's ``engine``, ``force_publish`` and ``rerun`` params as bin/pipeline records its
    flags (core.runs.record_options: ``runs/<run id>/pipeline.json``), so an operator who resumes this
    run with ``bin/pipeline --resume`` gets them back: without ``rerun`` the resume would not force
    the stages after the one that failed, and they would skip what their ledgers say is done.

    Once per run: a retried or cleared load task leaves the record as it is, or it would replace
    what a resume by hand recorded (``--engine ease`` after a failed train) with the DAG's params."""
    if runs.read_record(run_id, runs.OPTIONS) is None:
        runs.record_options(run_id, params["engine"], params["force_publish"], params.get("rerun") or [])


def demo_input() -> str:
    """load's default input as the jobs must get it (``DEMO_INPUT``, from the repository): a job
    imports core from the --py-files zip, which knows no repository to take data/demo/ from."""
    return from_repository(get_settings().demo_input, APP_ROOT)
