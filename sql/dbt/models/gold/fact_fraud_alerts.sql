-- One row per alerted transaction: scores, reason codes (strongest first), versions.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='transaction_id',
    indexes=[
        {'columns': ['transaction_id'], 'unique': True},
        {'columns': ['event_time']},
        {'columns': ['customer_id']},
    ],
    post_hook="{{ advance_watermark([ref('fraud_alerts')]) }}",
) }}

select
    transaction_id,
    customer_id,
    store_id,
    product_id,
    payment_method,
    amount,
    event_time,
    (event_time at time zone 'UTC')::date as date_day,
    date_trunc('hour', event_time, 'UTC') as hour_start,
    score,
    rules_score,
    ml_score,
    reason_codes,
    top_reason_code,
    rules_version,
    model_version,
    transaction_found
from {{ ref('fraud_alerts') }}
{% if is_incremental() %}
where {{ since_watermark() }}
{% endif %}
