-- A dead letter can come from the producer itself (`streamflow live`, stage `ingest`: a line too
-- large for the topic's maximum message size never reaches Kafka), so bronze accepts that stage.
ALTER TABLE bronze.dead_letters DROP CONSTRAINT dead_letters_stage_check;
ALTER TABLE bronze.dead_letters
    ADD CONSTRAINT dead_letters_stage_check
    CHECK (stage IN ('ingest', 'parse', 'validate', 'detect', 'sink'));
