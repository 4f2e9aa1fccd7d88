"""the pgvector index kind: a SQL function that reads a stored voiceprint (little-endian float32
bytes) as a real[], which the kind's trigger casts to a pgvector column

The column, its trigger and its HNSW index are not created here: their type, vector(d), depends on
the bank's model, and the extension may be missing or not allowed to this user. They are created,
or dropped, in the transaction that switches a bank to or from the pgvector kind
(voicebank.index.pgvector.switch). So this revision is a no-op on SQLite, and on a PostgreSQL
without pgvector it only adds a function that nothing calls until the kind is chosen.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: Union[str, None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# IEEE 754 binary32, little-endian, decoded with integer arithmetic; exact (every float32 is a float8).
F32LE = """
CREATE OR REPLACE FUNCTION voicebank_f32le(b bytea) RETURNS real[] LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT array_agg(CASE WHEN e = 0 THEN (1 - 2 * s) * m * 2.0::float8 ^ (-149)
                        ELSE (1 - 2 * s) * (8388608 + m) * 2.0::float8 ^ (e - 150) END ORDER BY i)::real[]
  FROM (SELECT i, get_byte(b, 4 * i + 3) >> 7 AS s,
               ((get_byte(b, 4 * i + 3) & 127) << 1) | (get_byte(b, 4 * i + 2) >> 7) AS e,
               ((get_byte(b, 4 * i + 2) & 127) << 16) | (get_byte(b, 4 * i + 1) << 8) | get_byte(b, 4 * i) AS m
        FROM generate_series(0, length(b) / 4 - 1) AS i) AS parts
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(sa.text(F32LE))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(sa.text("DROP TRIGGER IF EXISTS voicebank_embedding ON speakers"))
        op.execute(sa.text("DROP FUNCTION IF EXISTS voicebank_embed_speaker()"))
        op.execute(sa.text("ALTER TABLE speakers DROP COLUMN IF EXISTS embedding"))
        op.execute(sa.text("DROP FUNCTION IF EXISTS voicebank_f32le(bytea)"))
        op.execute(sa.text("UPDATE bank SET index_kind = 'flat' WHERE index_kind = 'pgvector'"))
