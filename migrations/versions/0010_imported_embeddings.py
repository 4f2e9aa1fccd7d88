"""utterances without a recording: embeddings imported as they were computed elsewhere

``voicebank import FILE.npz`` enrolls people from embeddings a model made elsewhere: each is kept
as an utterance (the voiceprint is their mean, and later recordings are averaged in with them),
but there is no recording behind it, so no file hash, no duration and no speech duration to store.
Those columns may now be empty; every recording enrolled from audio still fills them, and a
recording's hash stays unique over the bank (empty ones are not compared).

Downgrading is refused while such utterances exist: the older schema has no way to hold them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: Union[str, None] = "0009"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

COLUMNS = (("sha256", sa.String(64)), ("duration_s", sa.Float()), ("speech_s", sa.Float()))


def upgrade() -> None:
    with op.batch_alter_table("utterances") as batch_op:
        for name, kind in COLUMNS:
            batch_op.alter_column(name, existing_type=kind, nullable=True)


def downgrade() -> None:
    imported = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM utterances WHERE sha256 IS NULL")).scalar()
    if imported:
        raise RuntimeError(f"{imported} utterances were imported as embeddings, without a recording; revision 0009 "
                           "cannot hold them. Remove the speakers imported from embeddings first.")
    with op.batch_alter_table("utterances") as batch_op:
        for name, kind in COLUMNS:
            batch_op.alter_column(name, existing_type=kind, nullable=False)
