-- One row per distinct transaction_id, with its alert's score (null when it raised none). The
-- columns are a fixed interface (docs/warehouse.md): keep them exactly. Times are absolute
-- (timestamptz); hours and days are cut in UTC everywhere in gold.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='transaction_id',
    indexes=[
        {'columns': ['transaction_id'], 'unique': True},
        {'columns': ['event_time']},
        {'columns': ['store_id', 'event_time']},
        {'columns': ['customer_id', 'event_time']},
    ],
    post_hook="{{ advance_watermark([ref('transactions'), ref('fraud_alerts')]) }}",
) }}

{% if is_incremental() %}
with changed as (
    -- New transactions, and older ones whose alert arrived since.
    select transaction_id from {{ ref('transactions') }} where {{ since_watermark() }}
    union
    select transaction_id from {{ ref('fraud_alerts') }}
    where {{ since_watermark() }} and transaction_found
)

-- Look-ups by transaction_id (LATERAL): a build touches a few rows of a large table, which the
-- planner cannot know from the watermark comparison, and would otherwise hash the whole table.
select
    t.transaction_id,
    t.customer_id,
    t.store_id,
    t.amount,
    t.event_time,
    a.transaction_id is not null as is_alert,
    a.score
from changed as c
cross join lateral (
    select * from {{ ref('transactions') }} as t where t.transaction_id = c.transaction_id
) as t
left join lateral (
    select transaction_id, score from {{ ref('fraud_alerts') }} as a
    where a.transaction_id = c.transaction_id
) as a on true
{% else %}
select
    t.transaction_id,
    t.customer_id,
    t.store_id,
    t.amount,
    t.event_time,
    a.transaction_id is not null as is_alert,
    a.score
from {{ ref('transactions') }} as t
left join {{ ref('fraud_alerts') }} as a on a.transaction_id = t.transaction_id
{% endif %}
