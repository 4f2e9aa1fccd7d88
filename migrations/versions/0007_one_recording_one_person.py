"""one recording, one person; look-alike skeletons spelled in full

One recording, one person: a recording's SHA-256 is unique over the whole bank, not only per
speaker, so that two processes enrolling the same file under two names at once cannot both succeed
(the rule was checked before the write transaction; it is now checked inside it too, and the
database refuses what slips past)

A bank where that race already happened holds one recording under two speakers: nothing is deleted
here, the old per-speaker constraint is kept for it (new enrollments are still checked inside the
write), and the revision says so in the log; `voicebank check` names the recordings.

Each name's look-alike skeleton is computed again: it now spells one character as several where
they look alike (``m`` as ``rn``) and leaves out what renders as nothing (voicebank.confusable).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""
import logging
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: Union[str, None] = "0006"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

log = logging.getLogger("voicebank.migrations")


def _constraints() -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_unique_constraints("utterances")}


def upgrade() -> None:
    from voicebank.confusable import skeleton

    conn = op.get_bind()
    for speaker_id, name in conn.execute(sa.text("SELECT id, name FROM speakers")).all():
        conn.execute(sa.text("UPDATE speakers SET skeleton = :s WHERE id = :i"), {"s": skeleton(name), "i": speaker_id})
    shared = op.get_bind().execute(sa.text(
        "SELECT COUNT(*) FROM (SELECT sha256 FROM utterances GROUP BY sha256 HAVING COUNT(*) > 1) AS shared")).scalar()
    if shared:
        log.warning("%d recording(s) are enrolled under two speakers (enrolled at once by two processes, before "
                    "this revision): the bank keeps them, and new enrollments are still checked; `voicebank check` "
                    "names them", shared)
        return
    with op.batch_alter_table("utterances") as batch_op:
        batch_op.drop_constraint("uq_utterances_speaker_sha256", type_="unique")
        batch_op.create_unique_constraint("uq_utterances_sha256", ["sha256"])


def downgrade() -> None:
    if "uq_utterances_sha256" not in _constraints():
        return
    with op.batch_alter_table("utterances") as batch_op:
        batch_op.drop_constraint("uq_utterances_sha256", type_="unique")
        batch_op.create_unique_constraint("uq_utterances_speaker_sha256", ["speaker_id", "sha256"])
