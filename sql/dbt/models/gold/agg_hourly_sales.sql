-- Per store and UTC hour. Each build recomputes, from the fact table, exactly the (store, hour)
-- pairs that received a transaction or an alert since the last build: a late event lands in its
-- own hour, and running twice changes nothing. Columns are a fixed interface.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['store_id', 'hour_start'],
    indexes=[{'columns': ['store_id', 'hour_start'], 'unique': True}, {'columns': ['hour_start']}],
    post_hook="{{ advance_watermark([ref('transactions'), ref('fraud_alerts')]) }}",
) }}

{% if is_incremental() %}
with touched as (
    select distinct store_id, date_trunc('hour', event_time, 'UTC') as hour_start
    from (
        select store_id, event_time from {{ ref('transactions') }} where {{ since_watermark() }}
        union all
        select store_id, event_time from {{ ref('fraud_alerts') }} where {{ since_watermark() }}
    ) as arrived
)

-- One index range scan of the fact table per touched hour (LATERAL): the planner cannot know
-- how few pairs a build touches, and would otherwise scan and group the whole table.
select h.store_id, h.hour_start, s.transactions, s.amount_total, s.amount_avg, s.alerts
from touched as h
cross join lateral (
    select
        count(*) as transactions,
        sum(f.amount) as amount_total,
        round(avg(f.amount), 2) as amount_avg,
        count(*) filter (where f.is_alert) as alerts
    from {{ ref('fact_transactions') }} as f
    where f.store_id = h.store_id
      and f.event_time >= h.hour_start and f.event_time < h.hour_start + interval '1 hour'
) as s
where s.transactions > 0
{% else %}
select
    store_id,
    date_trunc('hour', event_time, 'UTC') as hour_start,
    count(*) as transactions,
    sum(amount) as amount_total,
    round(avg(amount), 2) as amount_avg,
    count(*) filter (where is_alert) as alerts
from {{ ref('fact_transactions') }}
group by 1, 2
{% endif %}
