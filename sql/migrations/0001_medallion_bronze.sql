-- The medallion layers, and bronze: what arrived, as it arrived.
-- CloudNativePG's Database declares the schemas too (spec.schemas); creating them here as well
-- keeps a plain PostgreSQL (development, CI) complete.
CREATE SCHEMA IF NOT EXISTS bronze;
CREATE SCHEMA IF NOT EXISTS silver;
CREATE SCHEMA IF NOT EXISTS gold;

-- Valid transactions as the transaction-processor read them (events.Transaction), with their
-- Kafka coordinates: a redelivered record is the same row, so loads are idempotent.
CREATE TABLE bronze.transactions (
    kafka_topic      text        NOT NULL,
    kafka_partition  integer     NOT NULL CHECK (kafka_partition >= 0),
    kafka_offset     bigint      NOT NULL CHECK (kafka_offset >= 0),
    transaction_id   text        NOT NULL,
    customer_id      text        NOT NULL,
    store_id         text        NOT NULL,
    product_id       text,
    amount           numeric(12, 2) NOT NULL CHECK (amount > 0),
    currency         char(3)     NOT NULL,
    payment_method   text,
    latitude         double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude        double precision CHECK (longitude BETWEEN -180 AND 180),
    event_time       timestamptz NOT NULL,
    schema_version   integer     NOT NULL CHECK (schema_version >= 1),
    payload          jsonb       NOT NULL,
    ingested_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);
CREATE INDEX transactions_transaction_id ON bronze.transactions (transaction_id);
CREATE INDEX transactions_ingested_at ON bronze.transactions (ingested_at);

-- Alerts as the fraud-detector published them (events.FraudAlert): reasons, rules and model
-- versions kept whole, so every alert can be explained later.
CREATE TABLE bronze.fraud_alerts (
    kafka_topic      text        NOT NULL,
    kafka_partition  integer     NOT NULL CHECK (kafka_partition >= 0),
    kafka_offset     bigint      NOT NULL CHECK (kafka_offset >= 0),
    transaction_id   text        NOT NULL,
    customer_id      text        NOT NULL,
    store_id         text        NOT NULL,
    amount           numeric(12, 2) NOT NULL,
    event_time       timestamptz NOT NULL,
    score            double precision NOT NULL CHECK (score BETWEEN 0 AND 1),
    rules_score      double precision NOT NULL CHECK (rules_score BETWEEN 0 AND 1),
    ml_score         double precision CHECK (ml_score BETWEEN 0 AND 1),
    reasons          jsonb       NOT NULL,
    rules_version    text        NOT NULL,
    model_version    text,
    ingested_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);
CREATE INDEX fraud_alerts_transaction_id ON bronze.fraud_alerts (transaction_id);

-- Everything that could not be processed (events.DeadLetter): nothing is dropped silently.
CREATE TABLE bronze.dead_letters (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    error_type        text        NOT NULL,
    error_message     text        NOT NULL,
    stage             text        NOT NULL CHECK (stage IN ('parse', 'validate', 'detect', 'sink')),
    source            jsonb       NOT NULL,
    kafka_topic       text GENERATED ALWAYS AS (source ->> 'topic') STORED,
    kafka_partition   integer GENERATED ALWAYS AS ((source ->> 'partition')::integer) STORED,
    kafka_offset      bigint GENERATED ALWAYS AS ((source ->> 'offset')::bigint) STORED,
    payload           text        NOT NULL,
    payload_bytes     integer     NOT NULL CHECK (payload_bytes >= 0),
    payload_truncated boolean     NOT NULL,
    failed_at         timestamptz NOT NULL,
    ingested_at       timestamptz NOT NULL DEFAULT now(),
    -- A record redelivered by Kafka is dead-lettered once per stage; records from files carry
    -- no Kafka coordinates, and NULLs never collide.
    UNIQUE NULLS DISTINCT (kafka_topic, kafka_partition, kafka_offset, stage)
);
CREATE INDEX dead_letters_failed_at ON bronze.dead_letters (failed_at);
CREATE INDEX dead_letters_error_type ON bronze.dead_letters (error_type);
