"""two operating points: an identification threshold beside the verification one, and what each means;
thresholds of the enrollment checks of their own; each name's look-alike skeleton

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: Union[str, None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("bank") as batch_op:
        batch_op.add_column(sa.Column("identify_threshold", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("operating", sa.JSON(), nullable=True))
        # existing banks keep deciding on the best score, which their threshold was set for;
        # new banks decide by the margin rule (voicebank.calibration.decide)
        batch_op.add_column(sa.Column("identify_rule", sa.String(length=16), server_default="best", nullable=False))
        # null: the model's measured default (voicebank.embedding.ENROLLMENT_CHECKS)
        batch_op.add_column(sa.Column("consistency_threshold", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("duplicate_threshold", sa.Float(), nullable=True))
    # both operating points start from the one threshold the bank had
    op.execute(sa.text("UPDATE bank SET identify_threshold = threshold"))
    with op.batch_alter_table("bank") as batch_op:
        batch_op.alter_column("identify_threshold", existing_type=sa.Float(), nullable=False)

    # names that look alike (UTS #39 skeletons) are refused from now on; existing ones are kept
    from voicebank.confusable import skeleton

    with op.batch_alter_table("speakers") as batch_op:
        batch_op.add_column(sa.Column("skeleton", sa.String(length=1024), nullable=True))
    conn = op.get_bind()
    for speaker_id, name in conn.execute(sa.text("SELECT id, name FROM speakers")).all():
        conn.execute(sa.text("UPDATE speakers SET skeleton = :s WHERE id = :i"), {"s": skeleton(name), "i": speaker_id})
    with op.batch_alter_table("speakers") as batch_op:
        batch_op.alter_column("skeleton", existing_type=sa.String(length=1024), nullable=False)
        batch_op.create_index(batch_op.f("ix_speakers_skeleton"), ["skeleton"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("speakers") as batch_op:
        batch_op.drop_index(batch_op.f("ix_speakers_skeleton"))
        batch_op.drop_column("skeleton")
    with op.batch_alter_table("bank") as batch_op:
        batch_op.drop_column("duplicate_threshold")
        batch_op.drop_column("consistency_threshold")
        batch_op.drop_column("identify_rule")
        batch_op.drop_column("operating")
        batch_op.drop_column("identify_threshold")
