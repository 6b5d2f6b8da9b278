-- The standing verdict per transaction: the latest report wins (a chargeback after an analyst's
-- "legit" overrules it). Small, so rebuilt whole each time.
{{ config(materialized='table', indexes=[{'columns': ['transaction_id'], 'unique': True}]) }}

select distinct on (transaction_id)
    transaction_id,
    is_fraud,
    source,
    reported_at,
    imported_at,
    count(*) over (partition by transaction_id) as reports
from {{ ref('stg_feedback') }}
order by transaction_id, reported_at desc nulls last, imported_at desc, source
