"""score normalization: cohort table, AS-norm top-N setting, score kind in the audit trail

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: Union[str, None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "cohort",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=1024), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cohort")),
        sa.UniqueConstraint("sha256", name=op.f("uq_cohort_sha256")),
    )
    with op.batch_alter_table("bank") as batch_op:
        batch_op.add_column(sa.Column("cohort_top_n", sa.Integer(), server_default="100", nullable=False))
    with op.batch_alter_table("audit") as batch_op:
        batch_op.add_column(sa.Column("score_kind", sa.String(length=64), server_default="cosine", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("audit") as batch_op:
        batch_op.drop_column("score_kind")
    with op.batch_alter_table("bank") as batch_op:
        batch_op.drop_column("cohort_top_n")
    op.drop_table("cohort")
