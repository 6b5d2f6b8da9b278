{{ config(materialized='table', indexes=[{'columns': ['store_id'], 'unique': True}]) }}

select
    store_id,
    first_seen_at,
    last_seen_at,
    transactions,
    amount_total,
    round(amount_total / transactions, 2) as amount_avg,
    case when located_transactions > 0 then latitude_total / located_transactions end as latitude,
    case when located_transactions > 0 then longitude_total / located_transactions end as longitude
from {{ ref('stores') }}
