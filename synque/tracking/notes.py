"""What a person sees first in the MLflow UI: the experiment's kind and the Markdown notes.

MLflow shows a run's or an experiment's tag `mlflow.note.content` as its description
(Markdown, GitHub flavour: tables render). The experiment's note is shared: `correlate` and
`select` each own one section of it, fenced by HTML comments (the UI's sanitizer drops
comments, so the fences are invisible), and any text a user wrote outside the fences stays.

MLflow 3 records what an experiment is for in its tag `mlflow.experimentKind`; synque's are
model-development ones ("Machine learning" in the UI's kind selector: runs table first, not
the GenAI overview). Caveat, read from MLflow 3.17.2's JS bundle: that UI (its workflow
switch feature flag is on) takes the kind from the user's "GenAI / Model training" switch
instead (`?workflowType=machine_learning` in the URL, then remembered by the browser), so
there the tag is the record of intent, not what picks the landing page.
"""

from __future__ import annotations

import logging
import re

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from synque.tracking.store import TAG

log = logging.getLogger(__name__)

#: The description tag, on runs and experiments alike.
NOTE = MLFLOW_RUN_NOTE
#: Tag the MLflow 3 UI reads to choose an experiment's pages (set by its kind selector).
EXPERIMENT_KIND = "mlflow.experimentKind"
#: Value of `EXPERIMENT_KIND` for classic model development (runs table first).
MODEL_DEVELOPMENT = "custom_model_development"
#: MLflow refuses longer experiment tag values (runs: 8000); a section is cut to fit well below.
MAX_EXPERIMENT_NOTE = 20000


def mark_model_development(client: MlflowClient, experiment_id: str) -> None:
    """Set the experiment kind to model development, unless a kind is already chosen.

    Why only then: a user may have picked another kind in the UI on purpose. A store that
    refuses the tag (a read-only user) costs a warning, never the job.
    """
    try:
        tags = client.get_experiment(experiment_id).tags
        if not tags.get(EXPERIMENT_KIND):
            client.set_experiment_tag(experiment_id, EXPERIMENT_KIND, MODEL_DEVELOPMENT)
    except MlflowException as exc:
        log.warning("could not set %s on experiment %s: %s", EXPERIMENT_KIND, experiment_id, exc)


def _fences(section: str) -> tuple[str, str]:
    return f"<!-- synque:{section} -->", f"<!-- /synque:{section} -->"


def with_section(note: str, section: str, markdown: str) -> str:
    """`note` with synque's `section` replaced by `markdown` (appended when it is new)."""
    start, end = _fences(section)
    block = f"{start}\n\n{markdown.strip()}\n\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(note):
        return pattern.sub(lambda _: block, note, count=1)
    return f"{note.rstrip()}\n\n{block}" if note.strip() else block


def set_experiment_section(
    client: MlflowClient, experiment_id: str, section: str, markdown: str
) -> None:
    """Write `markdown` as synque's `section` of the experiment's note (its description)."""
    note = client.get_experiment(experiment_id).tags.get(NOTE, "")
    updated = with_section(note, section, markdown)
    if len(updated) > MAX_EXPERIMENT_NOTE:
        raise ValueError(
            f"the experiment's note would hold {len(updated)} characters "
            f"(MLflow keeps at most {MAX_EXPERIMENT_NOTE})"
        )
    client.set_experiment_tag(experiment_id, NOTE, updated)


def error_line(exc: BaseException) -> str:
    """`Type: first line of the message`, short enough for a tag."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:500]


def write_notes(client: MlflowClient, experiment_id: str, section: str, markdown: str) -> None:
    """`markdown` as the active run's description, and (naming the run) as synque's `section`
    of the experiment's description.

    Why never raise: the note is a view of the run's tables; a store that refuses it (or a
    note too long) costs the tag `synque.warning.note`, not the run.
    """
    run_id = mlflow.active_run().info.run_id
    try:
        mlflow.set_tag(NOTE, markdown)
        footer = f"_From the {section} run `{run_id}`._"
        set_experiment_section(client, experiment_id, section, f"{markdown}\n\n{footer}")
    except Exception as exc:
        reason = error_line(exc)
        log.warning("%s: description not written (%s)", section, reason)
        mlflow.set_tag(f"{TAG}warning.note", reason)
