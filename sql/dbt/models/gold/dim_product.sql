{{ config(materialized='table', indexes=[{'columns': ['product_id'], 'unique': True}]) }}

select
    product_id,
    first_seen_at,
    last_seen_at,
    transactions,
    amount_total,
    round(amount_total / transactions, 2) as amount_avg,
    amount_max
from {{ ref('products') }}
