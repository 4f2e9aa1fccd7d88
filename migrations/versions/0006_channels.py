"""channels: each recording's measured channel and its embedding through the telephone channel, each
speaker's telephone voiceprint, the telephone operating points, and the channel of each decision

Banks from before keep working: their recordings have no telephone embedding (``channel`` null),
their speakers are marked ``wideband`` (no telephone voiceprint), and a telephone caller is decided
against the wideband voiceprints, saying so, until the speaker is enrolled again.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: Union[str, None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("utterances") as batch_op:
        batch_op.add_column(sa.Column("channel", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("telephone", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("cohort") as batch_op:
        batch_op.add_column(sa.Column("channel", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("telephone", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("speakers") as batch_op:
        batch_op.add_column(sa.Column("telephone", sa.LargeBinary(), nullable=True))
        # which voiceprints a speaker has: "wideband+telephone", "telephone" (enrolled over the
        # phone only) or "wideband" (enrolled before channels: no telephone voiceprint)
        batch_op.add_column(sa.Column("channels", sa.String(length=32), server_default="wideband", nullable=False))
        batch_op.create_index(batch_op.f("ix_speakers_channels"), ["channels"], unique=False)
    with op.batch_alter_table("bank") as batch_op:
        batch_op.add_column(sa.Column("telephone_threshold", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("telephone_identify_threshold", sa.Float(), nullable=True))
    with op.batch_alter_table("audit") as batch_op:
        batch_op.add_column(sa.Column("channel", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("detail", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit") as batch_op:
        batch_op.drop_column("detail")
        batch_op.drop_column("channel")
    with op.batch_alter_table("bank") as batch_op:
        batch_op.drop_column("telephone_identify_threshold")
        batch_op.drop_column("telephone_threshold")
    with op.batch_alter_table("speakers") as batch_op:
        batch_op.drop_index(batch_op.f("ix_speakers_channels"))
        batch_op.drop_column("channels")
        batch_op.drop_column("telephone")
    for table in ("utterances", "cohort"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("telephone")
            batch_op.drop_column("channel")
