-- Stores as running totals; their position is the mean of what their terminals report.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='store_id',
    indexes=[{'columns': ['store_id'], 'unique': True}],
    post_hook="{{ advance_watermark([ref('transactions')]) }}",
) }}

{{ rollup_entity('store_id', {
    'located_transactions': 'case when latitude is not null and longitude is not null then 1 else 0 end',
    'latitude_total': 'case when longitude is not null then latitude end',
    'longitude_total': 'case when latitude is not null then longitude end',
}) }}
