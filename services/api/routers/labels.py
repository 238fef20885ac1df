"""POST /v1/labels: labels for tasks, by event id or by text; all or nothing."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from services.api.deps import RuntimeDep
from services.enqueue import Enqueuer
from services.errors import BrokerUnavailable
from services.training import labels

router = APIRouter(prefix="/v1/labels", tags=["classification"])
log = logging.getLogger(__name__)


class LabelsIn(BaseModel):
    """A batch of labels (1 to SIFT_MAX_LABELS_PER_REQUEST)."""

    labels: list[labels.LabelIn]


class LabelsRecorded(BaseModel):
    """What the batch did."""

    written: int = Field(description="new label rows (first labels and corrections)")
    unchanged: int = Field(description="labels the event already had (a repeat writes nothing)")
    new_event_ids: list[str] = Field(description="events made for labels given with a text only")


@router.post("", status_code=201, response_model=LabelsRecorded)
def post_labels(body: LabelsIn, request: Request, runtime: RuntimeDep) -> LabelsRecorded:
    """Record labels; an unknown task, event or label writes nothing and says which one."""
    s = runtime.settings
    with runtime.db.session_scope() as session:
        result = labels.record(
            session, labels=body.labels, max_labels=s.max_labels_per_request, max_text_chars=s.max_text_chars
        )
    if result.new_event_ids:
        try:
            Enqueuer(request.app.state.enqueuer_app, batch_size=s.batch_size).send(
                result.new_event_ids, tenant=runtime.tenant
            )
        except BrokerUnavailable:
            log.warning("broker down: %d labeled texts wait for the sweep", len(result.new_event_ids))
    return LabelsRecorded(written=result.written, unchanged=result.unchanged, new_event_ids=result.new_event_ids)
