-- What the warehouse's own tools write into bronze (the streaming jobs write 0001's tables), and
-- the model registry. silver and gold belong to dbt (sql/dbt); these tables are inputs or
-- ledgers that must survive a rebuild of either.

-- Confirmed verdicts from analysts or a chargeback feed (`streamflow feedback import`). One row
-- per (transaction, source, report time): importing the same file twice changes nothing.
CREATE TABLE bronze.feedback (
    transaction_id text        NOT NULL CHECK (transaction_id ~ '\S' AND length(transaction_id) <= 128),
    is_fraud       boolean     NOT NULL,
    source         text        NOT NULL DEFAULT 'unknown' CHECK (source ~ '\S' AND length(source) <= 64),
    reported_at    timestamptz,
    imported_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (transaction_id, source, reported_at)
);
CREATE INDEX feedback_imported_at ON bronze.feedback (imported_at);

-- Dead letters re-published to the transactions topic: each one once. A row is claimed
-- ('claimed') before the publish and marked 'published' with where it landed afterwards; a
-- claim left by a crashed run is published again by the next one (the warehouse deduplicates
-- transactions by transaction_id, so a second copy is one silver row).
CREATE TABLE bronze.dead_letter_redrives (
    dead_letter_id  bigint      PRIMARY KEY,  -- bronze.dead_letters.id (kept after retention)
    transaction_id  text        NOT NULL,
    error_type      text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('claimed', 'published')),
    claimed_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    topic           text,
    kafka_partition integer,
    kafka_offset    bigint
);

-- Candidate models registered by the model_training DAG: the artifact (checksummed JSON, no
-- pickle), its backtest against the live model, and why it was registered. Promotion is a change
-- of the FraudPipeline's `model` section (docs/runbook.md), never done by the DAG.
CREATE SCHEMA IF NOT EXISTS ml;
CREATE TABLE ml.model_candidates (
    model_version    text        PRIMARY KEY,
    checksum         text        NOT NULL,
    artifact         jsonb       NOT NULL,
    metrics          jsonb       NOT NULL,
    baseline_version text,
    baseline_metrics jsonb       NOT NULL,
    training         jsonb       NOT NULL,
    registered_at    timestamptz NOT NULL DEFAULT now()
);
