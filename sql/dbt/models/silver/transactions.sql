-- One row per transaction_id: the first copy loaded wins (a Kafka redelivery is already one bronze
-- row; a producer that sent the same event twice makes two, and they become one here).
-- Incremental by load time, not event time: a late event is just another new row.
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    indexes=[
        {'columns': ['transaction_id'], 'unique': True},
        {'columns': ['_loaded_at']},
        {'columns': ['ingested_at']},
        {'columns': ['event_time']},
        {'columns': ['customer_id', 'event_time']},
    ],
) }}

with arrived as (
    select * from {{ ref('stg_transactions') }}
    {% if is_incremental() %}
    where {{ since_last_load() }}
    {% endif %}
),

first_copy as (
    select distinct on (transaction_id) *
    from arrived
    order by transaction_id, ingested_at, kafka_topic, kafka_partition, kafka_offset
)

select
    transaction_id,
    customer_id,
    store_id,
    product_id,
    amount,
    currency,
    payment_method,
    latitude,
    longitude,
    event_time,
    event_timestamp,
    schema_version,
    kafka_topic,
    kafka_partition,
    kafka_offset,
    ingested_at,
    now() as _loaded_at
from first_copy as f
{% if is_incremental() %}
where not exists (select 1 from {{ this }} as t where t.transaction_id = f.transaction_id)
{% endif %}
