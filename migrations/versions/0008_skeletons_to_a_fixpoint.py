"""look-alike skeletons mapped before folding, to a fixpoint

Each name's look-alike skeleton is computed again (voicebank.confusable): the look-alike mapping now
comes before NFKC (``ϲ`` is ``c``, not ``ς``), direction marks in the data no longer make a
character look like a sequence, and the mapping repeats until nothing changes (``ǁ`` is ``ll``).
A bank whose names only became look-alikes now keeps them all; new names are checked against them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-14
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: Union[str, None] = "0007"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    from voicebank.confusable import skeleton

    conn = op.get_bind()
    for speaker_id, name in conn.execute(sa.text("SELECT id, name FROM speakers")).all():
        conn.execute(sa.text("UPDATE speakers SET skeleton = :s WHERE id = :i"), {"s": skeleton(name), "i": speaker_id})


def downgrade() -> None:
    """The older skeletons are not kept: they told fewer look-alikes apart, so the new ones stay."""
