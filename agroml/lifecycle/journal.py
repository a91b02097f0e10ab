"""Installing a folder as ``models/<type>/production/`` so that a kill at any point leaves a whole model.

The steps, each one atomic, with a journal file that says how far a killed process got:

1. copy the new model into a temporary sibling folder (``.production.<random>/production``); a kill
   here leaves production as it was and a temporary folder the next promotion removes;
2. write the journal (``.production-journal.json``: the staged folder's inode, where the old
   production goes, the registry event to record);
3. swap the staged folder and production in one step (:func:`agroml.core.swap.replace_folder`; on
   systems without an atomic exchange, two renames, the only window without a production folder);
4. move the old production (now at the staged path) to ``archive/<its run id>/``;
5. record the event in the registry (once: it carries an id);
6. remove the journal and the temporary folder.

Whoever comes next (a promote, rollback, publish or history on this model type) first calls
:func:`recover`: the journal tells whether step 3 happened (production is the staged folder: same
inode), and the rest is finished forwards (archive, record) or undone (the staged copy is dropped).
Both are safe to repeat, so a kill during recovery is recovered from too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agroml.core.errors import OutputError
from agroml.core.files import _lock, free_name, write_json
from agroml.core.swap import replace_folder
from agroml.lifecycle.locating import ARCHIVE, PRODUCTION, _read_json, folder_run_id
from agroml.lifecycle.registry import PromotionEvent, Registry

JOURNAL = ".production-journal.json"
LOCK = ".production.lock"
STAGING_PREFIX = f".{PRODUCTION}."
#: Test hook: ``AGROML_TEST_PAUSE=<step>:<seconds>`` sleeps at that step, so a test can SIGKILL the
#: process exactly there. Unset in real use (costs one environment lookup per step).
PAUSE_ENV = "AGROML_TEST_PAUSE"


def pause_point(step: str) -> None:
    """Sleep at ``step`` when AGROML_TEST_PAUSE names it (for kill tests; a no-op otherwise)."""
    wanted = os.environ.get(PAUSE_ENV, "")
    for item in wanted.split(","):
        name, _, seconds = item.partition(":")
        if name == step:
            time.sleep(float(seconds or 30))


@contextlib.contextmanager
def production_lock(type_dir: Path) -> Iterator[None]:
    """Hold the model type's promotion lock: one promote / rollback / recovery at a time (the kernel drops
    it when the holder dies, even by SIGKILL)."""
    type_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(type_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        _lock(fd, blocking=True)
        yield
    finally:
        os.close(fd)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_dev


def stage_copy(type_dir: Path, source: Path, marker: dict[str, Any] | None = None) -> Path:
    """Step 1: a complete copy of ``source`` in a temporary sibling of production; its path.

    Files are copied as new files (umask permissions, not the source's), so an account that serves
    models can read them; bytes are copied exactly. ``marker`` (if given) is written as PROMOTED.json.
    """
    tmp = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=type_dir))
    staged = tmp / PRODUCTION
    shutil.copytree(source, staged, copy_function=shutil.copyfile)
    if marker is not None:
        write_json(staged / "PROMOTED.json", marker)
    return staged


def install(registry: Registry, type_dir: Path, staged: Path, event: PromotionEvent) -> PromotionEvent:
    """Steps 2-6: make ``staged`` the production folder, archive the old one, record ``event``.

    ``event.archived_to`` and ``event.previous_run_id`` are filled in here. Call with the lock held.
    """
    pause_point("staged")
    production = type_dir / PRODUCTION
    event.event_id = event.event_id or uuid.uuid4().hex
    if production.exists():
        event.previous_run_id = folder_run_id(production)
        event.archived_to = str(free_name(type_dir / ARCHIVE / event.previous_run_id))
    identity = _identity(staged)
    write_json(
        type_dir / JOURNAL,
        {"staged": str(staged), "staged_identity": identity, "event": asdict(event)},
    )
    pause_point("journal")
    if event.archived_to is not None:
        Path(event.archived_to).parent.mkdir(parents=True, exist_ok=True)
        replace_folder(staged, production, Path(event.archived_to))
    else:
        os.replace(staged, production)
    pause_point("swapped")
    _finish(registry, type_dir, staged, event)
    return event


def _finish(registry: Registry, type_dir: Path, staged: Path, event: PromotionEvent) -> None:
    """After the swap: the old folder to the archive (if still at the staged path), the event recorded."""
    if event.archived_to is not None and staged.exists() and not Path(event.archived_to).exists():
        os.replace(staged, event.archived_to)
    pause_point("archived")
    registry.record_event(event)
    pause_point("recorded")
    (type_dir / JOURNAL).unlink(missing_ok=True)
    shutil.rmtree(staged.parent, ignore_errors=True)


def recover(registry: Registry, type_dir: Path) -> str | None:
    """Finish or undo a promotion / rollback that a kill interrupted; what was done (None: nothing to do).

    Call with the lock held. Leftover staging folders without a journal (a kill during the copy) are
    removed too.
    """
    journal = _read_json(type_dir / JOURNAL)
    done = None
    if journal:
        staged = Path(journal["staged"])
        event = PromotionEvent(**journal["event"])
        production = type_dir / PRODUCTION
        identity = journal.get("staged_identity")
        if not production.exists() and staged.exists():  # killed between the two fallback renames
            os.replace(staged, production)
        if identity is not None and list(_identity(production) or ()) == list(identity):
            _finish(registry, type_dir, staged, event)
            done = f"finished the interrupted {event.event} of {event.run_id} ({event.command})"
        else:  # the swap never happened: production is untouched, the staged copy goes
            (type_dir / JOURNAL).unlink(missing_ok=True)
            done = f"undid the interrupted {event.event} of {event.run_id} ({event.command}): production unchanged"
    if type_dir.is_dir():
        for leftover in type_dir.glob(f"{STAGING_PREFIX}*"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
    return done


def guarded(action: str, production: Path, step: Callable[[], Any]) -> Any:
    """Run a file step, turning an OSError into a one-line OutputError with a fix."""
    try:
        return step()
    except OSError as exc:
        raise OutputError(
            f"cannot {action} into {production}: {exc}",
            fix="check free disk space and permissions under AGROML_MODELS_DIR",
        ) from None
