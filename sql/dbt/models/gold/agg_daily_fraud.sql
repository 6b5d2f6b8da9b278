-- Per UTC day, recomputed for the days that received a transaction or an alert since the last
-- build (see agg_hourly_sales). Columns are a fixed interface.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='day',
    indexes=[{'columns': ['day'], 'unique': True}],
    post_hook="{{ advance_watermark([ref('transactions'), ref('fraud_alerts')]) }}",
) }}

{% if is_incremental() %}
with touched as (
    select distinct (event_time at time zone 'UTC')::date as day
    from (
        select event_time from {{ ref('transactions') }} where {{ since_watermark() }}
        union all
        select event_time from {{ ref('fraud_alerts') }} where {{ since_watermark() }}
    ) as arrived
)

select d.day, s.transactions, s.alerts, s.amount_total, s.alert_amount_total
from touched as d
cross join lateral (
    select
        count(*) as transactions,
        count(*) filter (where f.is_alert) as alerts,
        sum(f.amount) as amount_total,
        coalesce(sum(f.amount) filter (where f.is_alert), 0) as alert_amount_total
    from {{ ref('fact_transactions') }} as f
    where f.event_time >= d.day::timestamp at time zone 'UTC'
      and f.event_time < (d.day + 1)::timestamp at time zone 'UTC'
) as s
where s.transactions > 0
{% else %}
select
    (event_time at time zone 'UTC')::date as day,
    count(*) as transactions,
    count(*) filter (where is_alert) as alerts,
    sum(amount) as amount_total,
    coalesce(sum(amount) filter (where is_alert), 0) as alert_amount_total
from {{ ref('fact_transactions') }}
group by 1
{% endif %}
