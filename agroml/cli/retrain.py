"""Command: ``retrain`` (the whole loop, for cron and Windows Task Scheduler; the exit code says what happened)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from agroml.cli import output
from agroml.cli.options import JsonOpt, ModelAllOpt, ModelTypeOrAll, SourceOpt
from agroml.core import config
from agroml.ops.retrain import RetrainResult, retrain
from agroml.training.config import STRATEGIES


def _table(result: RetrainResult) -> None:
    table = Table(title="retrain", title_justify="left")
    for name in ("model", "outcome", "run", "new rows", "test acc", "test F1", "log"):
        table.add_column(name, justify="right" if name in ("new rows", "test acc", "test F1") else "left")
    for m in result.models:
        acc, f1 = m.test.get("accuracy"), m.test.get("macro_f1")
        table.add_row(
            m.model_type,
            m.outcome.replace("_", " "),
            m.run_id or "",
            "" if m.new_rows is None else str(m.new_rows),
            "" if acc is None else f"{acc:.3f}",
            "" if f1 is None else f"{f1:.3f}",
            m.log or "",
        )
    output.stdout.print(table)
    for m in result.models:
        output.stdout.print(f"{m.model_type}: {m.reason}", highlight=False)


def retrain_cmd(
    model: ModelAllOpt = ModelTypeOrAll("all"),
    min_new: Annotated[
        int,
        typer.Option("--min-new", min=0, help="Train only when at least this many new trainable rows arrived."),
    ] = 1,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="JSON or YAML TrainConfig file instead of the production model's config."),
    ] = None,
    publish: Annotated[
        bool, typer.Option("--publish", help="Upload a promoted model to the Storage bucket (AGROML_MODEL_BUCKET).")
    ] = False,
    source: SourceOpt = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            "--strategy",
            metavar="[" + "|".join(STRATEGIES) + "]",
            autocompletion=lambda: list(STRATEGIES),
            help="tf.distribute strategy of the training, instead of the recorded config's (as train --strategy; "
            'multiworker: every worker runs retrain with its TF_CONFIG; README, "Several machines").',
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Pull, check, train, gate and promote in one unattended command (for cron / Task Scheduler).

    Steps per model type: pull what is new (when the source is Supabase); stop if the data is not ready
    or fewer than --min-new trainable rows arrived since the newest successful run; train with the
    production model's recorded config (or --config FILE); compare with the production model on rows
    neither trained on (the gate); promote (and upload with --publish). A second retrain of the same type
    started while one runs stops at once. Each run writes `training_logs/<UTC time>-<type>.log`
    (AGROML_LOG_DIR); alerts go to AGROML_ALERT_WEBHOOK.

    Exit codes: 0 promoted, or nothing to do (not ready, no new data, already running); 1 failed (see
    the log; an alert was sent); 3 trained but refused by the gate (production unchanged). With --model
    all the worst wins: 1, then 3.

    Example: agroml retrain --model all --publish

    Example: agroml retrain --model pest --min-new 200 --config tiny.yaml
    """

    settings = config.resolve({"source": source.value if source is not None else None})
    with output.progress() as progress:
        result = retrain(
            settings,
            model.value,
            min_new=min_new,
            config_file=config_file,
            publish=publish,
            progress=progress,
            notice=output.notice,
            strategy=strategy,
        )
    output.emit(result, json_, _table)
    raise typer.Exit(result.exit_code)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("retrain")(retrain_cmd)
