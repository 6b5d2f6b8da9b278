-- Typed bronze transactions. Times stay timestamptz (absolute); the event's own UTC offset, which
-- the detector's unusual-hour rule reads, survives in event_timestamp (the original text).
select
    kafka_topic,
    kafka_partition,
    kafka_offset,
    transaction_id,
    customer_id,
    store_id,
    product_id,
    amount,
    currency::text as currency,
    payment_method,
    latitude,
    longitude,
    event_time,
    payload ->> 'timestamp' as event_timestamp,
    schema_version,
    ingested_at
from {{ source('bronze', 'transactions') }}
