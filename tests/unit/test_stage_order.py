"""The order of a pipeline run's jobs is core.runs.STAGES: bin/pipeline submits them so and the DAG
chains its tasks so (after its wait for load's inputs), each written out where it is read best (a line per submit with its own
arguments; an explicit ``>>`` chain). Both are read here as text, without running either (the
DAG needs Airflow, tests/integration/test_airflow_dag.py checks its task graph with it)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from core.runs import STAGES

ROOT = Path(__file__).resolve().parents[2]


def test_bin_pipeline_submits_the_stages_in_order():
    script = (ROOT / "bin" / "pipeline").read_text()
    assert re.findall(r"^submit (\w+)", script, flags=re.MULTILINE) == list(STAGES)


def _chain(node: ast.expr) -> list[ast.expr]:
    """The operands of ``a >> b >> c``, left to right."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.RShift):
        return [*_chain(node.left), *_chain(node.right)]
    return [node]


def test_the_dag_chains_the_stages_in_order():
    tree = ast.parse((ROOT / "dags" / "recommender_pipeline.py").read_text())
    # variable -> the job of its SparkJobOperator(job=...)
    jobs = {node.targets[0].id: kw.value.value for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
            and getattr(node.value.func, "id", "") == "SparkJobOperator"
            for kw in node.value.keywords if kw.arg == "job"}
    [chain] = [_chain(node.value) for node in ast.walk(tree)
               if isinstance(node, ast.Expr) and isinstance(node.value, ast.BinOp)]
    # wait_for_inputs() (a @task.sensor: load's inputs) and evaluate(): @tasks
    tasks = [jobs[op.id] if isinstance(op, ast.Name) else op.func.id for op in chain]
    assert tasks == ["wait_for_inputs", *STAGES[:-1], "evaluate", STAGES[-1]]
    assert sorted(jobs.values()) == sorted(STAGES)
