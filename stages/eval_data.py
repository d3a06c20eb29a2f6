"""DVC stage ``eval_data@<dataset>``: the built-in evaluation tasks' data from one validation export."""

from src import config
from src.cli import dataset_argument, run_cli, start_process
from src.evaluate.stage_inputs import eval_data_inputs
from src.evaluate.task_data import write_task_data
from src.input_guard import unchanged_inputs


def main() -> None:
    dataset = dataset_argument(
        "eval_data",
        "write the built-in evaluation tasks' data (documents and continuation questions) of one "
        "validation export into <paths.cache_dir>/eval/<dataset>.",
        "tokenize.datasets",
    )
    params = config.load_params()
    start_process(params)
    with unchanged_inputs(eval_data_inputs(params, dataset), params, config.PARAMS_FILE):
        record = write_task_data(
            params.paths.raw_dir() / dataset,
            params.paths.eval_data_dir(dataset),
            dataset,
            params.evaluate.choices,
            params.evaluate.seed,
        )
    print(f"{dataset}: {record['documents']} documents, {record['questions']} continuation questions")


if __name__ == "__main__":
    run_cli(main)
