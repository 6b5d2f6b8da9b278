-- One alert per transaction (the first published), joined to its transaction. An alert can be
-- loaded before its transaction: it is kept with transaction_found = false and completed by the
-- first build that finds the transaction.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='transaction_id',
    indexes=[
        {'columns': ['transaction_id'], 'unique': True},
        {'columns': ['_loaded_at']},
        {'columns': ['ingested_at']},
    ],
) }}

with arrived as (
    select * from {{ ref('stg_fraud_alerts') }} as s
    {% if is_incremental() %}
    where {{ since_last_load() }}
      and not exists (select 1 from {{ this }} as a where a.transaction_id = s.transaction_id)
    {% endif %}
),

first_copy as (
    select distinct on (transaction_id)
        transaction_id, customer_id, store_id, amount, event_time, score, rules_score, ml_score,
        reasons, reason_codes, rules_version, model_version, ingested_at
    from arrived
    order by transaction_id, ingested_at, kafka_topic, kafka_partition, kafka_offset
),

candidates as (
    select * from first_copy
    {% if is_incremental() %}
    union all
    -- Alerts still waiting for their transaction, now that it has arrived.
    select
        transaction_id, customer_id, store_id, amount, event_time, score, rules_score, ml_score,
        reasons, reason_codes, rules_version, model_version, ingested_at
    from {{ this }} as w
    where not w.transaction_found
      and exists (select 1 from {{ ref('transactions') }} as t where t.transaction_id = w.transaction_id)
    {% endif %}
)

select
    a.transaction_id,
    a.customer_id,
    a.store_id,
    t.product_id,
    t.payment_method,
    a.amount,
    a.event_time,
    a.score,
    a.rules_score,
    a.ml_score,
    a.reasons,
    a.reason_codes,
    a.reason_codes[1] as top_reason_code,
    a.rules_version,
    a.model_version,
    t.transaction_id is not null as transaction_found,
    a.ingested_at,
    now() as _loaded_at
from candidates as a
left join {{ ref('transactions') }} as t on t.transaction_id = a.transaction_id
