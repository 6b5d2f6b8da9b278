-- Customers as running totals (see macros/rollup.sql). The sums of squares and of the hour's
-- sine/cosine give the amount's standard deviation and the usual hour (a circular mean, so
-- 23:00 and 01:00 average to midnight) without re-reading history.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='customer_id',
    indexes=[{'columns': ['customer_id'], 'unique': True}],
    post_hook="{{ advance_watermark([ref('transactions')]) }}",
) }}

{{ rollup_entity('customer_id', {
    'amount_squares_total': 'amount * amount',
    'hour_sin_total': "sin(2 * pi() * extract(epoch from event_time - date_trunc('day', event_time, 'UTC')) / 86400)",
    'hour_cos_total': "cos(2 * pi() * extract(epoch from event_time - date_trunc('day', event_time, 'UTC')) / 86400)",
}) }}
