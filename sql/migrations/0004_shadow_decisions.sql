-- Shadow runs (FraudPipeline spec.shadow, fraud-detector --shadow-*): what a challenger (other
-- rules and/or model) decided beside the live detector on the same transaction, for every
-- transaction where either side alerted. Nothing here was acted on; the warehouse compares it
-- with the live decisions before a challenger is promoted.
CREATE TABLE bronze.shadow_decisions (
    kafka_topic           text        NOT NULL,
    kafka_partition       integer     NOT NULL CHECK (kafka_partition >= 0),
    kafka_offset          bigint      NOT NULL CHECK (kafka_offset >= 0),
    transaction_id        text        NOT NULL,
    customer_id           text        NOT NULL,
    store_id              text        NOT NULL,
    event_time            timestamptz NOT NULL,
    live_action           text        NOT NULL CHECK (live_action IN ('allow', 'review', 'block')),
    live_score            double precision NOT NULL CHECK (live_score BETWEEN 0 AND 1),
    live_rules_version    text        NOT NULL,
    live_model_version    text,
    shadow_action         text        NOT NULL CHECK (shadow_action IN ('allow', 'review', 'block')),
    shadow_score          double precision NOT NULL CHECK (shadow_score BETWEEN 0 AND 1),
    shadow_reasons        jsonb       NOT NULL,
    shadow_rules_version  text        NOT NULL,
    shadow_model_version  text,
    ingested_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);
CREATE INDEX shadow_decisions_transaction_id ON bronze.shadow_decisions (transaction_id);
