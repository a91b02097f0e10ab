"""Training from a fresh local snapshot: with Supabase as the source, pull what is new, then train.

Why train from the store and not live from Supabase: a training reads every row and image several
times (split, epochs, evaluation); the store and image cache hold them locally, and ``pull`` brings
them up to date incrementally (rows upserted, only images not yet cached are fetched). So with
``AGROML_SOURCE=auto`` and a Supabase project configured (or ``supabase``), ``train`` and ``retrain``
pull first; ``--source local`` trains offline on what the store has.
"""

from __future__ import annotations

from agroml.core.config import Settings
from agroml.core.progress import NoticeFn, ProgressFn, no_notice, no_progress
from agroml.data.pulling import PullResult, pull
from agroml.training.config import TrainConfig
from agroml.training.run import TrainResult, train


def pull_summary(result: PullResult) -> str:
    """One line: what the pull changed, per model type, and the images it fetched."""
    parts = [
        f"{m}: {p.inserted} new, {p.updated} updated, {p.unchanged} unchanged rows" for m, p in result.models.items()
    ]
    if result.images is not None:
        parts.append(f"images: {result.images.fetched} fetched, {result.images.failed} failed")
    return "pulled from Supabase: " + "; ".join(parts)


def refresh(
    settings: Settings, model_type: str, progress: ProgressFn = no_progress, notice: NoticeFn = no_notice
) -> PullResult | None:
    """Pull ``model_type``'s rows and images into the store when the source is Supabase; None when local."""
    if settings.effective_source != "supabase":
        return None
    return pull(settings, model_type, progress=progress, notice=notice)


def train_fresh(
    settings: Settings, cfg: TrainConfig, progress: ProgressFn = no_progress, notice: NoticeFn = no_notice
) -> TrainResult:
    """:func:`refresh` the model type (a notice says what the pull did), then train from the store."""
    pulled = refresh(settings, cfg.model_type, progress, notice)
    if pulled is not None:
        notice(pull_summary(pulled))
        for warning in pulled.warnings:
            notice(f"pull: {warning}")
    return train(settings, cfg, progress=progress)
