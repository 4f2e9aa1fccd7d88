"""one recording, one person, by what it sounds like

Each utterance keeps a second hash beside its file's: the SHA-256 of its samples as decoded (mono,
at the model's rate, to 16 bits), unique over the bank. The same audio saved as WAV and as FLAC, or
with bytes appended after its end, hashes alike there, so it cannot be enrolled under two names.
Recordings enrolled before this revision have none (the bank keeps no audio to compute it from);
their files' hashes still hold them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: Union[str, None] = "0008"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("utterances") as batch_op:
        batch_op.add_column(sa.Column("content_sha256", sa.String(64), nullable=True))
        batch_op.create_unique_constraint("uq_utterances_content_sha256", ["content_sha256"])


def downgrade() -> None:
    with op.batch_alter_table("utterances") as batch_op:
        batch_op.drop_constraint("uq_utterances_content_sha256", type_="unique")
        batch_op.drop_column("content_sha256")
