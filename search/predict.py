"""Predict the classes of images or CSV rows with a trained model.

MODEL is a study (its name in the results directory, or its folder) whose final model to use, or a
model.pt. Each INPUT is an image file, a folder of images or a CSV file of tabular or pixel rows
(CSV files or images, not both). The predictions print as a table, or go to --output as CSV or
Parquet. Input that does not fit the model (missing columns, an unreadable image, a path that is
not there) is one line and exit status 2. Also `python -m search.predict` and `hpsearch-predict`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from search.cli import Parser, describe, entry_prog, run_cli
from search.results.files import MODEL_FILE
from search.results.locate import RESULTS_DIR_HELP, find_study
from trainables.errors import UserError

OUTPUT_SUFFIXES = (".csv", ".parquet")


PROG = "python -m search.predict"


def build_parser(prog: str = PROG) -> Parser:
    p = Parser(prog=prog, description=describe(__doc__))
    p.add_argument("model", metavar="MODEL",
                   help=f"a study (its name in --results-dir, or its folder) or a {MODEL_FILE} file")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders of images, or CSV files (tabular or pixel rows)")
    p.add_argument("--output", "-o", metavar="FILE",
                   help="write the table to FILE (.csv or .parquet) instead of printing it")
    p.add_argument("--results-dir", default=None, help=RESULTS_DIR_HELP)
    return p


def model_file(given: str, results_dir: str | None = None) -> Path:
    """A model.pt as given, the one in a folder (a study's, or a retrain's), or a study's by name."""
    path = Path(given).expanduser()
    if path.is_file() or path.suffix.lower() == ".pt":
        return path  # a missing one is the predictor's one line
    folder = path if path.is_dir() else find_study(given, results_dir)
    if not (folder / MODEL_FILE).is_file():
        raise UserError(f"{folder} holds no {MODEL_FILE}; give a study whose final phase finished, or a {MODEL_FILE}")
    return folder / MODEL_FILE


def read_csv(path: Path):
    import pandas as pd

    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not a readable CSV file ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def predict(model: Path, inputs: list[str]):
    """The table: `input` (a file, or FILE:ROW for CSV rows, counted from 1), then the prediction."""
    import pandas as pd

    from trainables.predictor import Predictor, image_files, prediction_table

    predictor = Predictor.load(model)
    csvs = [Path(p).expanduser() for p in inputs if p.lower().endswith(".csv")]
    if csvs and len(csvs) != len(inputs):
        raise UserError("give either CSV files or images, not both")
    tables = []
    if csvs:
        for path in csvs:
            if not path.is_file():
                raise UserError(f"{path} not found")
            frame = read_csv(path)
            try:
                table = prediction_table(predictor, frame)
            except UserError as e:
                raise UserError(f"{path}: {e}", option=e.option, fix=e.fix) from None
            table.insert(0, "input", [f"{path}:{i}" for i in range(1, len(frame) + 1)])
            tables.append(table)
    else:
        files = image_files(inputs)
        table = prediction_table(predictor, files)
        table.insert(0, "input", [str(f) for f in files])
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    output = Path(args.output).expanduser() if args.output else None
    if output is not None and (output.suffix.lower() not in OUTPUT_SUFFIXES or output.is_dir()):
        raise UserError(f"--output {output} must be a .csv or .parquet file", option="output", fix="FILE.csv")
    if output is not None and not output.parent.is_dir():
        raise UserError(f"--output {output}: folder {output.parent} not found", option="output",
                        fix="in an existing folder")
    table = predict(model_file(args.model, args.results_dir), args.inputs)
    if output is None:
        print(table[["input", "class", "probability"]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        return 0
    from search.util.atomic import atomic_write_text

    if output.suffix.lower() == ".csv":
        atomic_write_text(output, table.to_csv(index=False))
    else:
        table.to_parquet(output, index=False)
    print(f"{len(table)} predictions written to {output}", file=sys.stderr)
    return 0


def cli(argv: list[str] | None = None) -> None:
    """`python -m search.predict` and the hpsearch-predict script; `hpsearch predict` is search.main's."""
    run_cli(lambda: main(argv, prog=entry_prog("search.predict")))


if __name__ == "__main__":
    cli()
