"""DVC stage ``evaluate``: run lm-evaluation-harness tasks on the trained model (params.yaml evaluate)."""

from src.cli import run_stage
from src.config import PARAMS_FILE, Params
from src.paths import PROJECT_ROOT


def evaluate(params: Params) -> None:
    from src.evaluate.run import evaluate as run_evaluation  # lm-eval, torch: once the environment is set
    from src.evaluate.run import record
    from src.evaluate.stage_inputs import evaluate_inputs
    from src.input_guard import unchanged_inputs

    with unchanged_inputs(evaluate_inputs(params, PROJECT_ROOT), params, PARAMS_FILE):
        evaluation = run_evaluation(params, PROJECT_ROOT)
    record(params, evaluation, PROJECT_ROOT)


if __name__ == "__main__":
    run_stage(evaluate)
