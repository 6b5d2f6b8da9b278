-- Typed bronze alerts; the rule codes of the reasons as an array, strongest reason first.
select
    kafka_topic,
    kafka_partition,
    kafka_offset,
    transaction_id,
    customer_id,
    store_id,
    amount,
    event_time,
    score,
    rules_score,
    ml_score,
    reasons,
    array(
        select r ->> 'code'
        from jsonb_array_elements(case when jsonb_typeof(reasons) = 'array' then reasons else '[]' end)
            with ordinality as e (r, n)
        order by (r ->> 'severity')::double precision desc nulls last, n
    ) as reason_codes,
    rules_version,
    model_version,
    ingested_at
from {{ source('bronze', 'fraud_alerts') }}
